"""The pack's ComfyUI nodes: thin wrappers that turn inputs into one `motion_lora` call.

Node modules import without ComfyUI and without diffusers/transformers/peft; those load
when a node first runs. ComfyUI specifics live in `comfy.py` only.
"""

import functools

from . import apply_nodes, clip_nodes, comfy, lora_nodes, model_nodes, sample_node, train_node
from . import wan_nodes  # Wan: trains for ComfyUI's core Wan nodes

_PACK = __name__.rpartition(".")[0]  # ComfyUI names the pack's package after its folder's full path


def _plain_name(error_class: type) -> None:
    """ComfyUI's error dialog shows `<class module>.<class name>`; inside a custom-node folder the module
    is the folder's path (`/…/custom_nodes/pack.motion_lora.data.DataError`). Show `motion_lora.data.DataError`."""
    for klass in error_class.__mro__:
        if _PACK and klass.__module__.startswith(_PACK + "."):
            klass.__module__ = klass.__module__[len(_PACK) + 1:]


def _with_plain_error_names(cls: type) -> type:
    function = getattr(cls, cls.FUNCTION)

    @functools.wraps(function)
    def run(self, *args, **kwargs):
        try:
            return function(self, *args, **kwargs)
        except Exception as e:
            _plain_name(type(e))
            raise

    setattr(cls, cls.FUNCTION, run)
    return cls


comfy.register_lora_folder()

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _module in (model_nodes, clip_nodes, train_node, lora_nodes, apply_nodes, sample_node, wan_nodes):
    NODE_CLASS_MAPPINGS.update({k: _with_plain_error_names(v) for k, v in _module.NODE_CLASS_MAPPINGS.items()})
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
