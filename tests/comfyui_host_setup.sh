#!/usr/bin/env bash
# Set up a real ComfyUI checkout + venv for tests/test_comfyui_host.py (idempotent: re-running skips what is done).
#
# Usage: tests/comfyui_host_setup.sh TARGET_DIR [VENV_DIR]
#   TARGET_DIR  where the ComfyUI source tree goes (e.g. /work/comfyui)
#   VENV_DIR    the venv that runs ComfyUI (default: TARGET_DIR-venv)
#   COMFYUI_SOURCE (env)  where the ComfyUI source comes from, one of:
#     - a ComfyUI git repository you already have (a normal checkout, or a bare/mirror git dir such as
#       <mirror>/repo): its HEAD is checked out into TARGET_DIR;
#     - a git URL you are allowed to clone (e.g. the upstream comfyanonymous/ComfyUI repository).
#     Not needed when TARGET_DIR already holds ComfyUI (main.py present).
#
# Then run the host test from the repository root:
#   COMFYUI_DIR=TARGET_DIR COMFYUI_PYTHON=VENV_DIR/bin/python python -m pytest tests/test_comfyui_host.py -q
#
# torch is pinned to 2.14.1 / torchvision 0.29.1 (a matching pair); torchaudio is left out (no node of ours needs it,
# ComfyUI only loses its audio nodes). comfy-cli provides comfy_cli.workflow_to_api.convert_ui_to_api.
set -euo pipefail

TARGET="${1:?usage: $0 TARGET_DIR [VENV_DIR]}"
TARGET="$(mkdir -p "$TARGET" && cd "$TARGET" && pwd)"
VENV="${2:-${TARGET%/}-venv}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"

# 1. ComfyUI source.
if [ ! -f "$TARGET/main.py" ]; then
    SRC="${COMFYUI_SOURCE:?set COMFYUI_SOURCE to a ComfyUI git repository (path or URL); see the header of $0}"
    if [ -d "$SRC" ] && git --git-dir="$SRC" rev-parse --is-bare-repository >/dev/null 2>&1; then
        # A bare or mirror git dir: write its HEAD tree into TARGET. A mirror may lack a blob or two
        # (e.g. a large tokenizer file no test needs); git then reports it and writes the rest.
        git --git-dir="$SRC" --work-tree="$TARGET" checkout -f HEAD -- . || echo "warning: some files could not be checked out (see above)"
    elif [ -d "$SRC/.git" ]; then
        git clone --quiet "$SRC" "$TARGET"
    else
        git clone --quiet --depth 1 "$SRC" "$TARGET"
    fi
fi
[ -f "$TARGET/main.py" ] || { echo "error: $TARGET/main.py missing after checkout" >&2; exit 1; }

# 2. The venv that runs ComfyUI.
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"

# 3. torch first, pinned (a pair; never let another requirement pull a different torch).
if ! "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')))" 2>/dev/null; then
    "$PY" -m pip install "$TORCH_PIN" "$TORCHVISION_PIN"
fi

# 4. ComfyUI's requirements minus torchaudio, our pack's requirements, comfy-cli; torch stays pinned.
REQ="$(mktemp)"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$REQ" "$CONSTRAINTS"' EXIT
grep -v -i '^torchaudio' "$TARGET/requirements.txt" > "$REQ"
printf '%s\n%s\n' "$TORCH_PIN" "$TORCHVISION_PIN" > "$CONSTRAINTS"
"$PY" -m pip install -r "$REQ" -r "$REPO/requirements.txt" comfy-cli -c "$CONSTRAINTS"

# 5. Smoke check: the imports the host test relies on.
"$PY" -c "import torch, av, PIL, numpy; from comfy_cli.workflow_to_api import convert_ui_to_api; print('ComfyUI venv ready: torch', torch.__version__)"
echo "ComfyUI: $TARGET"
echo "Python:  $PY"
echo "Run:     COMFYUI_DIR=$TARGET COMFYUI_PYTHON=$PY python -m pytest tests/test_comfyui_host.py -q"
