"""Default vs official propagation, Dice against the case labels (prints Markdown tables).

Three tables: the 24 reference structures with the reference slice range, the same with the
range padded by 3 slices on each side (as a user's ROI usually is), and every other label of
the same cases (boxes made the same way: tight box of the label on its middle slice, the
label's slice range, padded by 3).

    python benchmarks/compare_modes.py [--only SUBSTRING] [--no-extra | --extra-only] [--embeddings-dir DIR]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSAMSegment"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import embedding_store  # noqa: E402
from MedSAMSegmentLib.engine.metrics import dice  # noqa: E402
SHARED = ROOT.parent / "shared"

# Every label of these cases that is not a reference structure is measured: no selection, so
# nothing is chosen by how well either mode does on it.
EXTRA_CASES = ("ct_abdomen_pelvis_totalseg", "ct_upper_abdomen_hires_totalseg", "mr_abdomen_totalseg")


def load(case):
    import SimpleITK as sitk

    folder = SHARED / "data" / "cases" / case
    return (sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "image.nii.gz"))),
            sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "label.nii.gz"))))


def label_box(label_mask):
    """Official protocol: tight in-plane box on the label's middle slice, the label's slice range."""
    ks = np.nonzero(label_mask.any(axis=(1, 2)))[0]
    z0, z1 = int(ks.min()), int(ks.max())
    zm = int((z1 - z0) / 2 + z0)
    ys, xs = np.nonzero(label_mask[zm])
    return [int(xs.min()), int(ys.min()), z0, int(xs.max()), int(ys.max()), z1]


def pad(box, n, depth):
    return box[:2] + [max(0, box[2] - n)] + box[3:5] + [min(depth - 1, box[5] + n)]


def extra_items(summary):
    """(name, case, label value, modality, box) of every label of EXTRA_CASES outside the reference set."""
    in_reference = {(n.split("/")[0], i["label"]) for n, i in summary.items()}
    items = []
    for case in EXTRA_CASES:
        names = json.loads((SHARED / "data" / "cases" / case / "labels.json").read_text())
        _, label = load(case)
        modality = "CT" if case.startswith("ct") else "MR"
        for value, struct in sorted(names.items(), key=lambda kv: int(kv[0])):
            value, region = int(value), label == int(value)
            if (case, value) not in in_reference and region.any():
                items.append((f"{case}/{struct}", case, value, modality, label_box(region)))
    return items


def run_table(pred, items, padding, embeddings_dir=None):
    from MedSAMSegmentLib.engine.intensity import auto_window
    from MedSAMSegmentLib.engine.propagation import segment_volume

    rows, cache = [], {}
    for name, case, label_value, modality, box in items:
        if case not in cache:
            image, label = load(case)
            cache = {case: (image, label, auto_window(image, modality=modality))}
            if embeddings_dir:  # robustness.py's native grid of the case: the same slices
                store = Path(embeddings_dir) / f"{case}__native.pt"
                embedding_store.load(pred, store, embedding_store.slice_keys(pred, image, cache[case][2]))
        image, label, window = cache[case]
        gt = label == label_value
        b = pad(list(box), padding, image.shape[0])
        scores = {}
        for mode in ("official", "default"):
            t = time.perf_counter()
            res = segment_volume(pred, image, window, b, axis="k", mode=mode)
            scores[mode] = (dice(res.mask, gt), time.perf_counter() - t)
        rows.append((name, scores["official"][0], scores["default"][0]))
        print(f"  {name:48s} official {scores['official'][0]:.4f}  default {scores['default'][0]:.4f}",
              file=sys.stderr, flush=True)
    return rows


def print_table(title, rows):
    print(f"\n### {title}\n")
    print("| structure | official | default | Δ |")
    print("|---|---:|---:|---:|")
    for name, off, dflt in rows:
        print(f"| {name} | {off:.4f} | {dflt:.4f} | {dflt - off:+.4f} |")
    off = np.mean([r[1] for r in rows])
    dflt = np.mean([r[2] for r in rows])
    print(f"| **mean ({len(rows)})** | **{off:.4f}** | **{dflt:.4f}** | **{dflt - off:+.4f}** |\n")
    for tol in (0.005, 0.0):
        better = sum(r[2] > r[1] + tol + 1e-9 for r in rows)
        worse = sum(r[2] < r[1] - tol - 1e-9 for r in rows)
        print(f"- by more than {tol} Dice: default better on {better}, worse on {worse}, "
              f"within on {len(rows) - better - worse}")


def main(argv=None):
    import torch

    from MedSAMSegmentLib.engine.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run structures whose name contains this")
    parser.add_argument("--no-extra", action="store_true", help="skip the labels outside the reference set")
    parser.add_argument("--extra-only", action="store_true", help="only the labels outside the reference set")
    parser.add_argument("--embeddings-dir", help="read slice embeddings stored by robustness.py")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    pred = Predictor(device="cpu", precision="float32", cache_mb=6000)
    summary = json.loads((SHARED / "reference" / "summary.json").read_text())
    ref_items = [(n, n.split("/")[0], i["label"], i["modality"], i["box"])
                 for n, i in summary.items() if args.only in n]
    if not args.extra_only:
        print_table("Reference structures, reference slice range", run_table(pred, ref_items, 0, args.embeddings_dir))
        print_table("Reference structures, range padded by 3 slices", run_table(pred, ref_items, 3, args.embeddings_dir))
    if not args.no_extra:
        extra = [item for item in extra_items(summary) if args.only in item[0]]
        print_table("Labels outside the reference set, range padded by 3 slices", run_table(pred, extra, 3, args.embeddings_dir))
    print(f"\nencoded slices: {pred.encoded}")


if __name__ == "__main__":
    main()
