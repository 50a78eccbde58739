"""MotionDirector for text-to-video diffusion models, as a plain Python library.

Layers: `model` (load a model bundle), `backbones` (per-family facts), `adapters`
(the spatial and temporal LoRA paths), `lora_file` (adapter files), `sampling`,
`training`, and a CLI (`python -m motion_lora`). Nothing here imports ComfyUI.
"""

__version__ = "0.1.0"
