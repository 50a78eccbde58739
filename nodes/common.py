"""Names shared by every node of the pack: the socket types and the menu category."""

CATEGORY = "MotionDirector"

MODEL = "MD_MODEL"  # motion_lora.patched_model.PatchedModel
CLIPS = "MD_CLIPS"  # list[motion_lora.data.Clip]
LORA = "MD_LORA"  # motion_lora.adapters.LoraAdapter (or a MissingLora from a path that was not trained)

STRENGTH = ("FLOAT", {"default": 1.0, "min": -2.0, "max": 2.0, "step": 0.05})
SEED_MAX = 0xFFFFFFFFFFFFFFFF


def with_tooltip(spec: tuple, tooltip: str) -> tuple:
    """An input spec with its tooltip added (specs are shared, never edited in place)."""
    kind, options = (spec[0], dict(spec[1])) if len(spec) > 1 else (spec[0], {})
    options["tooltip"] = tooltip
    return (kind, options)
