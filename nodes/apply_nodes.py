"""Apply Motion and Apply Appearance: model + LoRA + strength -> a new model handle.

The two are independent, so a motion of one run and an appearance of another mix freely.
The handle given is never changed (see motion_lora.patched_model).
"""

from __future__ import annotations

from .common import CATEGORY, LORA, MODEL, STRENGTH, with_tooltip


class _Apply:
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    KIND = ""
    ROLE = ""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model (from Load Model or another Apply node); it is not changed."}),
            "lora": (LORA, {"tooltip": f"A {cls.ROLE} LoRA ({cls.KIND} path) from Train or Load LoRA."}),
            "strength": with_tooltip(STRENGTH, f"How strongly the {cls.ROLE} shows: 1 as trained, 0 off, "
                                               "above 1 exaggerated, below 0 inverted."),
        }}

    def apply(self, model, lora, strength: float = 1.0):
        return (model.with_adapter(lora, strength, self.KIND),)


class ApplyMotion(_Apply):
    DESCRIPTION = "Adds a motion (temporal) LoRA to the model: videos sampled from it move like the training clips."
    OUTPUT_TOOLTIPS = ("A new model handle with the motion added.",)
    KIND = "temporal"
    ROLE = "motion"


class ApplyAppearance(_Apply):
    DESCRIPTION = "Adds an appearance (spatial) LoRA to the model: the look learnt from images or clips."
    OUTPUT_TOOLTIPS = ("A new model handle with the appearance added.",)
    KIND = "spatial"
    ROLE = "appearance"


NODE_CLASS_MAPPINGS = {"MotionDirectorApplyMotion": ApplyMotion, "MotionDirectorApplyAppearance": ApplyAppearance}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MotionDirectorApplyMotion": "MotionDirector Apply Motion",
    "MotionDirectorApplyAppearance": "MotionDirector Apply Appearance",
}
