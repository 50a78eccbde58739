"""Training clips: from IMAGE frames, from IMAGE stills, from a file or folder path.

Each node outputs the clips (MD_CLIPS, a list of motion_lora.data.Clip, chained through
`previous_clips` to gather several clips of one motion) and an IMAGE preview of the
frames exactly as the model will see them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import comfy
from .common import CATEGORY, CLIPS, SIZE, file_stamp

if TYPE_CHECKING:  # torch loads when a node runs, not when ComfyUI imports the pack
    import torch


class _ClipsNode:
    """What every clips node outputs."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (CLIPS, "IMAGE")
    RETURN_NAMES = ("clips", "preview")
    OUTPUT_TOOLTIPS = ("The training clips (the previous ones first, then these).",
                       "The new clips' frames after sampling, resizing and cropping: what training sees.")


def _prompt(tooltip: str) -> tuple:
    return ("STRING", {"default": "", "multiline": True, "tooltip": tooltip})


def _sizes() -> dict:
    return {
        "width": ("INT", {"default": 384, **SIZE, "tooltip": "Training width in pixels (frames are scaled to "
                          "cover it, then center-cropped). With bucketing: the pixel budget is width x height."}),
        "height": ("INT", {"default": 384, **SIZE, "tooltip": "Training height in pixels."}),
        "bucket": ("BOOLEAN", {"default": False, "tooltip": "Keep each clip's aspect ratio at about width x height "
                               "pixels (sides in multiples of 64) instead of cropping to exactly width x height."}),
    }


def _sampling() -> dict:
    return {
        "num_frames": ("INT", {"default": 16, "min": 1, "max": 256,
                               "tooltip": "Frames per clip (16 as MotionDirector)."}),
        "start": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "First frame to use."}),
        "stride": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Take every stride-th frame "
                           "(ignored when target_fps is set)."}),
        "target_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "step": 0.5, "tooltip":
                                 "Sample the video at about this many frames per second (8 for multi-clip "
                                 "training); 0 uses stride."}),
    }


_PREVIOUS = {"previous_clips": (CLIPS, {"tooltip": "Clips from another clips node, to train on all of them "
                                                   "together (several clips of one motion)."})}


def preview(clips) -> torch.Tensor:
    """All frames of `clips` as one IMAGE batch; clips of another size are resized to the first's for display."""
    import torch
    import torch.nn.functional as F

    h, w = clips[0].frames.shape[1:3]
    frames = []
    for clip in clips:
        f = clip.frames
        if f.shape[1:3] != (h, w):
            f = F.interpolate(f.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
            f = f.permute(0, 2, 3, 1)
        frames.append(f)
    return torch.cat(frames).clamp(0, 1)


def _out(previous, new):
    return (list(previous or []) + list(new), preview(new))


class ClipFromFrames(_ClipsNode):
    DESCRIPTION = ("One motion training clip from IMAGE frames: Load Video -> Get Video Components, "
                   "VideoHelperSuite's Load Video, or any batch of frames.")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The video's frames, in order."}),
                "prompt": _prompt("What the clip shows, e.g. 'a car is turning'. Train with a plain description; "
                                  "sample later with a new subject."),
                **_sampling(),
                **_sizes(),
            },
            "optional": {
                "video_fps": ("FLOAT", {"forceInput": True, "tooltip": "The frames' frame rate (Get Video "
                                        "Components' fps); needed for target_fps."}),
                **_PREVIOUS,
            },
        }

    def make(self, frames, prompt: str, num_frames: int = 16, start: int = 0, stride: int = 1, target_fps: float = 0.0,
             width: int = 384, height: int = 384, bucket: bool = False, video_fps: float | None = None,
             previous_clips=None):
        from ..motion_lora.data import DataError, clip_from_frames, stride_for_fps

        if target_fps > 0:
            if not video_fps:
                raise DataError("target_fps needs the frames' own rate: connect Get Video Components' fps to "
                                "video_fps, or set target_fps to 0 and use stride")
            stride = stride_for_fps(video_fps, target_fps, stride)
        clip = clip_from_frames(frames, prompt=prompt, num_frames=num_frames, start=start, stride=stride,
                                width=width, height=height, bucket=bucket, source="frames", fps=video_fps or None)
        return _out(previous_clips, [clip])


class ClipsFromImages(_ClipsNode):
    DESCRIPTION = ("Still-image training clips from IMAGE (Load Image, a batch of images): one 1-frame clip per "
                   "image, for appearance training (the images recipe).")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "One or more images; each becomes its own 1-frame clip."}),
                "prompt": _prompt("What the images show, e.g. 'a terracotta warrior'."),
                **_sizes(),
            },
            "optional": dict(_PREVIOUS),
        }

    def make(self, images, prompt: str, width: int = 384, height: int = 384, bucket: bool = False,
             previous_clips=None):
        from ..motion_lora.data import clip_from_frames

        clips = [clip_from_frames(images[i : i + 1], prompt=prompt, num_frames=1, width=width, height=height,
                                  bucket=bucket, source=f"image {i}") for i in range(images.shape[0])]
        return _out(previous_clips, clips)


def resolve_path(path: str) -> Path:
    """An absolute path as given; a relative one inside ComfyUI's input folder (or the working folder)."""
    p = Path(os.path.expanduser(path.strip().strip('"')))
    if p.is_absolute():
        return p
    return comfy.input_dir() / p


class ClipsFromPath(_ClipsNode):
    DESCRIPTION = ("Training clips from a path: a video, a folder of videos (one clip each, captions from "
                   "same-named .txt files), an image, or a folder of images.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "path": ("STRING", {"default": "", "tooltip": "A video or image file, or a folder of them. "
                                    "Relative paths start in ComfyUI's input folder."}),
                "prompt": _prompt("Caption for files without a same-named .txt caption."),
                **_sampling(),
                **_sizes(),
            },
            "optional": dict(_PREVIOUS),
        }

    @classmethod
    def IS_CHANGED(cls, path, **_):
        """Re-read the files when they (or their .txt captions) change; otherwise ComfyUI's cache stands."""
        p = resolve_path(path)
        if p.is_file():
            return file_stamp([p, p.with_suffix(".txt")])
        try:
            return file_stamp(sorted(p.iterdir()))
        except OSError:
            return ""

    def load(self, path: str, prompt: str, num_frames: int = 16, start: int = 0, stride: int = 1,
             target_fps: float = 0.0, width: int = 384, height: int = 384, bucket: bool = False,
             previous_clips=None):
        from ..motion_lora.data import DataError, load_clips

        if not path.strip():
            raise DataError("path is empty: type the path of a video, an image, or a folder of them")
        clips = load_clips(resolve_path(path), prompt=prompt, num_frames=num_frames, start=start, stride=stride,
                           fps=target_fps or None, width=width, height=height, bucket=bucket)
        return _out(previous_clips, clips)


NODE_CLASS_MAPPINGS = {
    "MotionDirectorClipFromFrames": ClipFromFrames,
    "MotionDirectorClipsFromImages": ClipsFromImages,
    "MotionDirectorClipsFromPath": ClipsFromPath,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MotionDirectorClipFromFrames": "MotionDirector Clip From Frames",
    "MotionDirectorClipsFromImages": "MotionDirector Clips From Images",
    "MotionDirectorClipsFromPath": "MotionDirector Clips From Path",
}
