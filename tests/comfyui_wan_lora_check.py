"""Run inside a ComfyUI checkout with ComfyUI's python: load a Wan diffusion model and a LoRA the way the core
`UNETLoader` -> `LoraLoaderModelOnly` nodes do, run the patched model on a fixed input, write what came out.

    python comfyui_wan_lora_check.py MODEL LORA INPUTS OUT

INPUTS is a safetensors file with x, timestep and context; OUT receives one output per strength (`base` without
the LoRA, `s0` at strength 0, `s1` at strength 1) and `OUT.json` the "lora key not loaded" warnings.
Used by tests/test_comfyui_wan_lora.py; imports nothing of ours.
"""

import json
import logging
import sys

import torch


def main(model_path: str, lora_path: str, inputs_path: str, out_path: str) -> None:
    sys.path.insert(0, ".")  # the ComfyUI checkout is the working directory
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management reads it
    import comfy.model_management
    import comfy.sd
    import comfy.utils
    from safetensors.torch import load_file, save_file

    warnings = []

    class Collect(logging.Handler):
        def emit(self, record):
            if "lora key not loaded" in record.getMessage():
                warnings.append(record.getMessage())

    logging.getLogger().addHandler(Collect())
    model = comfy.sd.load_diffusion_model(model_path, model_options={"dtype": torch.float32})
    lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
    inputs = load_file(inputs_path)
    outputs = {}
    for name, strength in (("base", None), ("s0", 0.0), ("s1", 1.0)):
        patched = model
        if strength is not None:  # what LoraLoaderModelOnly does
            patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0)
        comfy.model_management.load_models_gpu([patched], force_full_load=True)
        with torch.no_grad():
            out = patched.model.diffusion_model(inputs["x"], inputs["timestep"], inputs["context"])
        outputs[name] = out.float().contiguous()
        comfy.model_management.unload_all_models()
    save_file(outputs, out_path)
    info = {"warnings": warnings, "dtype": str(next(model.model.diffusion_model.parameters()).dtype)}
    with open(out_path + ".json", "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
