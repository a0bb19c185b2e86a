#!/usr/bin/env bash
# Fill the ignored folders that benchmarks/gpu_check.sh needs on a GPU machine that has its own
# torch but neither segment-anything nor the LiteMedSAM weights nor ../shared (about 42 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl .gpu/reference
for line in /.whl/ /.gpu/; do grep -qxF "$line" .git/info/exclude 2>/dev/null || echo "$line" >> .git/info/exclude; done
"$PY" -m pip download -q --no-deps -d .whl segment-anything==1.0
"$PY" - <<'PY'
import json, shutil
from pathlib import Path
import sys
sys.path.insert(0, "MedSAMSegment")
from MedSAMSegmentLib.model.weights import embedded_litemedsam_path

shutil.copy(embedded_litemedsam_path(), ".gpu/lite_medsam.pth")
ref = Path("..") / "shared" / "reference"
cases = ("ct_abdomen_pelvis_totalseg", "mr_brain1_tumor")
summary = {k: v for k, v in json.loads((ref / "summary.json").read_text()).items() if k.split("/")[0] in cases}
Path(".gpu/reference/summary.json").write_text(json.dumps(summary, indent=1))
for case in cases:
    shutil.copytree(ref / case, Path(".gpu/reference") / case, dirs_exist_ok=True)
PY
du -sh .whl .gpu
