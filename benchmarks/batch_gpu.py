"""End-to-end cohort throughput on a GPU: the 24 reference structures repeated to >= 2,000 slices,
one `medsam-segment batch` command each, model load included (prints a Markdown table).

Each repeat is a copy of the images with one corner voxel changed, so every slice is encoded
again (embeddings are cached by content). MedSAM ViT-B runs with random weights written to a
checkpoint here (the real medsam_vit_b.pth is not obtainable): the speed is the same.

    python benchmarks/batch_gpu.py [--work DIR] [--slices 2000] [--models litemedsam,medsam-vit-b] [--compile]
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "MedSAMSegment"))


def copies(work, cases, repeats):
    import SimpleITK as sitk

    for r in range(repeats):
        for case in cases:
            target = work / "images" / str(r) / f"{case}.nii.gz"
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            image = sitk.ReadImage(str(SHARED / "data" / "cases" / case / "image.nii.gz"))
            image.SetPixel(0, 0, 0, image.GetPixel(0, 0, 0) + r + 1)
            sitk.WriteImage(image, str(target))


def manifest(work, summary, repeats):
    path = work / f"cohort_{repeats}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "box_ijk", "modality", "axis", "output"])
        for r in range(repeats):
            for name, info in summary.items():
                case = name.split("/")[0]
                writer.writerow([work / "images" / str(r) / f"{case}.nii.gz", " ".join(map(str, info["box"])),
                                 info["modality"], "k", f"{r}/{name.replace('/', '__')}.nii.gz"])
    return path


def random_vit_b(work):
    import torch

    from MedSAMSegmentLib.model.models import build_network

    path = work / "random_medsam_vit_b.pth"
    if not path.exists():
        torch.save(build_network("medsam-vit-b").state_dict(), path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/medsam-batch-gpu")
    parser.add_argument("--slices", type=int, default=2000)
    parser.add_argument("--models", default="litemedsam,medsam-vit-b")
    parser.add_argument("--compile", action="store_true", help="also run each model with --compile")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    summary = json.loads((SHARED / "reference" / "summary.json").read_text())
    per_copy = sum(info["box"][5] - info["box"][2] + 1 for info in summary.values())
    repeats = -(-args.slices // per_copy)
    copies(work, sorted({name.split("/")[0] for name in summary}), repeats)
    cohort = manifest(work, summary, repeats)
    print(f"| model | options | rows | slices segmented | wall s | slices/s |\n|---|---|---:|---:|---:|---:|")
    for model in args.models.split(","):
        extra = ["--checkpoint", str(random_vit_b(work))] if model == "medsam-vit-b" else []
        for options in [[]] + ([["--compile"]] if args.compile else []):
            out = work / f"out_{model}_{'compile' if options else 'eager'}"
            command = [sys.executable, "-m", "MedSAMSegmentLib.cli", "batch", str(cohort), "-o", str(out), "--device",
                       "cuda", "--model", model, "--overwrite", "-q", *extra, *options]
            started = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT / "MedSAMSegment", capture_output=True, text=True)
            seconds = time.perf_counter() - started
            report = list(csv.DictReader(open(out / "report.csv"))) if (out / "report.csv").exists() else []
            slices = sum(int(r["segmented"] or 0) for r in report)
            print(f"| {model} | {' '.join(options) or '-'} | {len(report)} | {slices} | {seconds:.1f} | "
                  f"{slices / seconds:.0f} |" + ("" if done.returncode == 0 else f" exit {done.returncode}"), flush=True)


if __name__ == "__main__":
    main()
