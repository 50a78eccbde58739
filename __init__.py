"""ComfyUI entry of the MotionDirector pack: ComfyUI imports this folder and reads the two mappings.

Everything is imported relative to this package (`.nodes`, and the nodes import `..motion_lora`),
never by a plain top-level name: ComfyUI registers each custom-node folder under its own module
name, so two copies of the pack (a hand clone and a Manager install) each run their own code and
can never mix. The second copy to load registers no nodes and says which folders hold the pack.
Importing the pack loads no model, touches no network and leaves torch/diffusers/peft for later.
"""

import logging
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
_MARK = "__motiondirector_pack_dir__"
globals()[_MARK] = _PACK_DIR


def _other_copy() -> str | None:
    """The folder of another copy of this pack that is already loaded, if any."""
    for name, module in list(sys.modules.items()):
        folder = getattr(module, "__dict__", {}).get(_MARK)  # never getattr: some modules make up any attribute
        if isinstance(folder, str) and name != __name__ and folder != _PACK_DIR:
            return folder
    return None


_first = _other_copy()
if not __package__:  # run as a plain file, not as ComfyUI's package (pytest collecting this folder): no nodes
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
    WEB_DIRECTORY = None
elif _first is not None:
    logging.warning(
        "[MotionDirector] the pack is installed twice: %s (loaded, in use) and %s (this copy: its nodes are NOT "
        "loaded, so the two never mix). Delete or disable one of the two folders and restart ComfyUI.",
        _first, _PACK_DIR)
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
    WEB_DIRECTORY = None
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
    from .nodes.examples import copy_examples  # noqa: E402

    copy_examples()
    WEB_DIRECTORY = "./web"  # a few lines of JavaScript: the text our nodes report (where files went), on the node
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
