"""The pack's ComfyUI nodes: thin wrappers that turn inputs into one `motion_lora` call.

Node modules import without ComfyUI and without diffusers/transformers/peft; those load
when a node first runs. ComfyUI specifics live in `comfy.py` only.
"""

from . import apply_nodes, clip_nodes, comfy, lora_nodes, model_nodes, sample_node, train_node
from . import wan_nodes  # Wan: trains for ComfyUI's core Wan nodes

comfy.register_lora_folder()

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _module in (model_nodes, clip_nodes, train_node, lora_nodes, apply_nodes, sample_node, wan_nodes):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
