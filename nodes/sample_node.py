"""Sample: prompt -> video frames (IMAGE) from a model with its applied motion / appearance LoRAs."""

from __future__ import annotations

from . import comfy
from .common import CATEGORY, MODEL, SEED_MAX, SIZE


class Sample:
    DESCRIPTION = ("Generates a video from a prompt with the model's applied LoRAs. Connect the frames and fps to "
                   "Create Video -> Save Video, or to any IMAGE node.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("frames", "fps")
    OUTPUT_TOOLTIPS = ("The video's frames [frames, height, width, 3].", "The frame rate to play them at.")

    @classmethod
    def INPUT_TYPES(cls):
        from ..motion_lora.sampling import DEFAULT_SCHEDULER, SCHEDULERS

        return {
            "required": {
                "model": (MODEL, {"tooltip": "The model, usually after Apply Motion (and Apply Appearance)."}),
                "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "What the video shows, e.g. "
                                      "'a tank is turning' for a motion learnt from a turning car."}),
                "negative_prompt": ("STRING", {"default": "", "multiline": True,
                                               "tooltip": "What to steer away from (empty: unconditional)."}),
                "width": ("INT", {"default": 384, **SIZE, "tooltip": "Video width in pixels (multiple of 8)."}),
                "height": ("INT", {"default": 384, **SIZE, "tooltip": "Video height in pixels (multiple of 8)."}),
                "frames": ("INT", {"default": 16, "min": 1, "max": 256,
                                   "tooltip": "Number of frames (16 as trained)."}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 500, "tooltip": "Denoising steps."}),
                "cfg": ("FLOAT", {"default": 12.0, "min": 0.0, "max": 50.0, "step": 0.5, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (MotionDirector uses 12; 1 or less: "
                                             "no guidance)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                                 "tooltip": "Seed of the starting noise: the same seed gives the same video."}),
                "scheduler": (list(SCHEDULERS), {"default": DEFAULT_SCHEDULER, "tooltip": "The sampler "
                              "(ddim as MotionDirector)."}),
                "noise_prior": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                                          "Start from the inverted reference clip instead of pure noise: 0 off, "
                                          "0.1-0.5 for a motion learnt from one clip. Needs reference frames."}),
                "inversion_steps": ("INT", {"default": 50, "min": 1, "max": 500, "tooltip": "Inversion steps of "
                                    "the reference for the noise prior (50 as MotionDirector): DDIM backwards for "
                                    "ZeroScope, the flow ODE backwards for Wan."}),
                "fps": ("FLOAT", {"default": 8.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                  "tooltip": "Playback frame rate passed on to Create Video (8 as trained)."}),
            },
            "optional": {
                "reference": ("IMAGE", {"tooltip": "Frames for the noise prior, usually the training clip "
                                        "(the clips node's preview)."}),
                "image": ("IMAGE", {"tooltip": "Image-to-video, Wan 2.2 TI2V-5B only: the video's first frame "
                                    "(the first image of a batch; fitted to width x height)."}),
            },
        }

    def sample(self, model, prompt: str, negative_prompt: str = "", width: int = 384, height: int = 384,
               frames: int = 16, steps: int = 30, cfg: float = 12.0, seed: int = 0, scheduler: str = "ddim",
               noise_prior: float = 0.0, inversion_steps: int = 50, fps: float = 8.0, reference=None, image=None):
        from ..motion_lora.sampling import SamplingCancelled, SamplingError, sample

        if noise_prior > 0 and reference is None:
            raise SamplingError("noise_prior is above 0 but no reference frames are connected: connect the training "
                                "clip (the clips node's preview) to reference, or set noise_prior to 0")
        progress = comfy.Progress(steps)
        try:
            video = sample(model.model, prompt, negative_prompt, width=width, height=height, frames=frames,
                           steps=steps, guidance=cfg, seed=seed, scheduler=scheduler, adapters=model.applied,
                           noise_prior=noise_prior, reference=reference if noise_prior > 0 else None,
                           inversion_steps=inversion_steps, image=None if image is None else image[0],
                           progress=progress.update,
                           cancel=comfy.interrupted)
        except SamplingCancelled:
            comfy.raise_interrupted()
        return (video, float(fps))


NODE_CLASS_MAPPINGS = {"MotionDirectorSample": Sample}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionDirectorSample": "MotionDirector Sample"}
