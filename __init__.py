"""ComfyUI entry of the MotionDirector pack: ComfyUI imports this folder and reads the two mappings.

The library `motion_lora/` sits beside `nodes/` and is imported by its plain name, as the
tests and the command line do, so this folder joins the end of `sys.path` (never the
front: our `nodes` package must not shadow ComfyUI's `nodes` module). Importing the pack
loads no model, touches no network and leaves diffusers/transformers/peft for later.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
