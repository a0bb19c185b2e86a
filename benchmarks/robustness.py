"""Default vs official propagation on every labelled structure, on the native and resampled grids.

The stop rules of the default mode depend on the object's size in pixels, on how far it moves
between slices and on partial volume, all of which change with the grid. This benchmark varies
the grid instead of the rules: each case is also resampled (SimpleITK; image linear, label
nearest) to two coarse grids and a finer one, and every label present on a grid is segmented
with official-protocol prompts (the label's tight box on its middle slice, over its slice range,
as compare_modes.py makes them). Results per structure class, with counts of labels better and
worse by more than 0.02 Dice, and every case where the default is worse by more than that.

Each slice of a (case, grid) is encoded once; all its labels and both modes reuse the embedding
(the predictor's cache is keyed by slice content). --embeddings-dir keeps them on disk, so a
second run (another rule variant) encodes nothing.

    python benchmarks/robustness.py [--cases SUBSTRING ...] [--grids NAME ...] [--embeddings-dir DIR] [--previous]
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
from compare_modes import SHARED, label_box  # noqa: E402
from MedSAMSegmentLib.engine.metrics import dice  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# The three TotalSegmentator cases hold the 115 structures; the cords and the brain lesion add
# thin MR objects and the lesion class.
CASES = ("ct_abdomen_pelvis_totalseg", "ct_upper_abdomen_hires_totalseg", "mr_abdomen_totalseg",
         "mr_cspine_t1_cord", "mr_cspine_t2_cord", "mr_brain1_tumor")
# Spacing (i, j, k) in mm; "fine" is 2/3 of each case's native spacing.
GRIDS = {"4x4x2.5mm": (4.0, 4.0, 2.5), "5mm": (5.0, 5.0, 5.0), "native": None, "fine": "2/3"}
CLASSES = ("large organ", "small organ", "tubular", "bone", "lesion")
TUBULAR = ("spinal_cord", "spinal cord", "aorta", "vena_cava", "portal_vein", "iliac_", "esophagus",
           "trachea", "duodenum")
BONE = ("vertebrae", "rib_", "sacrum", "femur", "hip_", "humerus", "costal_cartilages", "intervertebral")
LARGE_ML = 100.0  # organs (and muscles) above this volume on the native grid are "large"
WORSE = 0.02


def structure_class(name, native_ml):
    if "tumour" in name or "lesion" in name:
        return "lesion"
    if any(t in name for t in TUBULAR):
        return "tubular"
    if any(b in name for b in BONE):
        return "bone"
    return "large organ" if native_ml >= LARGE_ML else "small organ"


def read_case(case):
    import SimpleITK as sitk

    folder = SHARED / "data" / "cases" / case
    names = json.loads((folder / "labels.json").read_text())
    modality = "CT" if case.startswith("ct") else "MR"
    return (sitk.ReadImage(str(folder / "image.nii.gz"), sitk.sitkFloat32),
            sitk.ReadImage(str(folder / "label.nii.gz")), names, modality)


def on_grid(image, label, grid):
    """(image array, label array, spacing) of a case on one grid."""
    import SimpleITK as sitk

    spacing = GRIDS[grid]
    if spacing is None:
        return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label), image.GetSpacing()
    old = np.array(image.GetSpacing())
    new = old * 2 / 3 if spacing == "2/3" else np.array(spacing)
    size = [max(1, int(round(n * o / s))) for n, o, s in zip(image.GetSize(), old, new)]

    def resample(img, interpolator):
        return sitk.GetArrayFromImage(sitk.Resample(img, size, sitk.Transform(), interpolator, img.GetOrigin(),
                                                    tuple(new), img.GetDirection(), 0, img.GetPixelID()))

    return resample(image, sitk.sitkLinear), resample(label, sitk.sitkNearestNeighbor), tuple(new)


def encode_cost(case, grid):
    """Slices of a case on a grid (what the encoder has to do)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(SHARED / "data" / "cases" / case / "image.nii.gz"))
    reader.ReadImageInformation()
    depth, spacing = reader.GetSize()[2], reader.GetSpacing()[2]
    new = GRIDS[grid]
    return depth if new is None else depth * 1.5 if new == "2/3" else depth * spacing / new[2]


ROW_FIELDS = ("case", "grid", "structure", "label", "class", "voxels", "slices", "official", "seconds")


def run_grid(pred, case, grid, variants, embeddings_dir=None, log=print, official=None):
    """Rows of one (case, grid): every label, official once, default once per rules variant.
    official: {(case, grid, label): Dice} from an earlier run, not re-measured (--official-from)."""
    from MedSAMSegmentLib.engine.intensity import auto_window
    from MedSAMSegmentLib.engine.propagation import segment_volume

    image_s, label_s, names, modality = read_case(case)
    native = sitk_volumes_ml(label_s)
    image, label, spacing = on_grid(image_s, label_s, grid)
    window = auto_window(image, modality=modality)
    keys = embedding_store.slice_keys(pred, image, window)
    store = None if embeddings_dir is None else Path(embeddings_dir) / f"{case}__{grid}.pt"
    embedding_store.load(pred, store, keys)
    encoded_before, rows = pred.encoded, []
    for value, name in sorted(names.items(), key=lambda kv: int(kv[0])):
        gt = label == int(value)
        if not gt.any():
            continue  # too small to survive the resampling
        present = np.nonzero(gt.any(axis=(1, 2)))[0]
        if not gt[int((present[-1] - present[0]) / 2 + present[0])].any():
            log(f"  {case}/{grid}/{name}: not prompted, the label is absent from its middle slice "
                "(the official protocol's box is drawn there)")
            continue
        box = label_box(gt)
        if box[3] - box[0] < 1 or box[4] - box[1] < 1:  # both modes refuse a box under 2 x 2 voxels
            log(f"  {case}/{grid}/{name}: not prompted, its middle-slice box is under 2 x 2 voxels")
            continue
        row = {"case": case, "grid": grid, "structure": name, "label": int(value),
               "class": structure_class(name, native.get(int(value), 0.0)),
               "voxels": int(gt.sum()), "slices": box[5] - box[2] + 1}
        t = time.perf_counter()
        known = (official or {}).get((case, grid, int(value)))
        if known is None:
            known = dice(segment_volume(pred, image, window, box, axis="k", mode="official").mask, gt)
        row["official"] = known
        for vname, rules in variants.items():
            res = segment_volume(pred, image, window, box, axis="k", mode="default", rules=rules)
            row[vname] = dice(res.mask, gt)
            row[vname + " slices"] = len(res.slices)
            row[vname + " stops"] = res.stop_reasons
        row["seconds"] = round(time.perf_counter() - t, 2)
        rows.append(row)
        log(f"  {case}/{grid}/{name:28s} " + "  ".join(f"{k} {row[k]:.3f}" for k in ["official", *variants]))
    if pred.encoded > encoded_before:
        embedding_store.save(pred, store, keys)
    pred.clear_cache()
    return rows, spacing


def sitk_volumes_ml(label_image):
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(label_image)
    voxel_ml = float(np.prod(label_image.GetSpacing())) / 1000.0
    values, counts = np.unique(arr[arr > 0], return_counts=True)
    return {int(v): c * voxel_ml for v, c in zip(values, counts)}


def summary_lines(rows, variant="default"):
    """Markdown: per grid and class, mean Dice and counts better/worse by more than WORSE."""
    grids = list(dict.fromkeys(r["grid"] for r in rows))
    out = [f"| grid | class | labels | official | {variant} | Δ | better > 0.02 | worse > 0.02 |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for grid in grids + ["all"]:
        for cls in CLASSES + ("all",):
            sel = [r for r in rows if grid in ("all", r["grid"]) and cls in ("all", r["class"])]
            if not sel:
                continue
            off = np.mean([r["official"] for r in sel])
            dflt = np.mean([r[variant] for r in sel])
            better = sum(r[variant] > r["official"] + WORSE for r in sel)
            worse = sum(r[variant] < r["official"] - WORSE for r in sel)
            bold = "**" if cls == "all" else ""
            out.append(f"| {bold}{grid}{bold} | {bold}{cls}{bold} | {len(sel)} | {off:.4f} | {dflt:.4f} | "
                       f"{dflt - off:+.4f} | {better} | {worse} |")
    return out


def worse_lines(rows, variant="default"):
    worse = sorted((r for r in rows if r[variant] < r["official"] - WORSE), key=lambda r: r[variant] - r["official"])
    out = [f"Every case where {variant} is worse than official by more than {WORSE} Dice: {len(worse)}.", ""]
    if worse:
        out += ["| case | grid | structure | class | slices | official | default | Δ | stops (up / down) |",
                "|---|---|---|---|---:|---:|---:|---:|---|"]
        for r in worse:
            stops = r.get(variant + " stops", {"up": "not recorded", "down": "not recorded"})
            out.append(f"| {r['case']} | {r['grid']} | {r['structure']} | {r['class']} | {r['slices']} | "
                       f"{r['official']:.4f} | {r[variant]:.4f} | {r[variant] - r['official']:+.4f} | "
                       f"{stops.get('up') or 'end'} / {stops.get('down') or 'end'} |")
    return out


def variants(previous=False):
    """The shipped default rules, and with previous=True the rules before they were made robust
    (issue 15: one bad slice stopped a direction, no retry, thin objects offered the wider box, the
    wider box kept whatever the decoder's rating)."""
    from MedSAMSegmentLib.engine.propagation import DEFAULT_RULES, DefaultRules

    found = {"default": DEFAULT_RULES}
    if previous:
        found["previous"] = DefaultRules(widen_thin=True, retry_margins=(), confirm_stop=False, wider_min_gain=-1.0)
    return found


def run(cases, grids, rule_variants, embeddings_dir=None, output=RESULTS / "robustness", official=None):
    """Measure, write OUTPUT.json after each (case, grid) and OUTPUT.md at the end; returns rows."""
    from MedSAMSegmentLib.engine.predictor import Predictor

    if embeddings_dir:
        Path(embeddings_dir).mkdir(parents=True, exist_ok=True)
    pred = Predictor(device="cpu", precision="float32", cache_mb=3000)
    rows, spacings, t0 = [], {}, time.perf_counter()
    # Cheapest (case, grid) first, so that an interrupted run has measured as much as it could.
    for case, grid in sorted(((c, g) for c in cases for g in grids), key=lambda cg: encode_cost(*cg)):
        grid_rows, spacing = run_grid(pred, case, grid, rule_variants, embeddings_dir,
                                      log=lambda s: print(s, file=sys.stderr, flush=True), official=official)
        rows += grid_rows
        spacings[f"{case}/{grid}"] = [round(float(s), 3) for s in spacing]
        Path(str(output) + ".json").write_text(json.dumps({"rows": rows, "spacings": spacings}, indent=1))
    write_report(rows, spacings, list(rule_variants), output,
                 f"{pred.encoded} slices encoded, {time.perf_counter() - t0:.0f} s")
    return rows


def write_report(rows, spacings, names, output, how=""):
    """OUTPUT.md: per grid and class, then every loss > WORSE, for each rules variant in `names`."""
    done = sorted({(r["case"], r["grid"]) for r in rows})
    lines = ["# Robustness: default vs official propagation on every structure and grid", "",
             f"`benchmarks/robustness.py`, LiteMedSAM float32 on the CPU; {len(rows)} label runs of each mode "
             f"on {len(done)} (case, grid) pairs{'; ' + how if how else ''}. Prompts: the label's tight box on "
             "its middle slice over its slice range (official protocol). Grids: native; 4 x 4 mm in-plane x "
             "2.5 mm slices; 5 mm isotropic; fine = 2/3 of the native spacing (image linear, label nearest). "
             f"Classes: by name (tubular, bone, lesion), other organs and muscles large from {LARGE_ML:.0f} ml.",
             "", "Grids measured (spacing i, j, k in mm):", ""]
    lines += [f"- {key}: {' x '.join(str(v) for v in spacing)}" for key, spacing in sorted(spacings.items())]
    for name in names:
        lines += ["", f"## {name} vs official", "", *summary_lines(rows, name), "", *worse_lines(rows, name)]
    Path(str(output) + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=[], help="run cases whose name contains one of these")
    parser.add_argument("--grids", nargs="*", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--embeddings-dir", help="keep slice embeddings here between runs")
    parser.add_argument("--output", default=str(RESULTS / "robustness"), help="writes OUTPUT.md and OUTPUT.json")
    parser.add_argument("--report-from", nargs="*", help="only re-write OUTPUT.md from these result files")
    parser.add_argument("--previous", action="store_true", help="also measure the rules before issue 15 "
                        "(a third of the decoder time more)")
    parser.add_argument("--official-from", help="take official Dice from this earlier OUTPUT.json instead of "
                        "re-running the official procedure (it does not change with the default rules)")
    args = parser.parse_args(argv)
    if args.report_from:  # e.g. several partial runs of disjoint (case, grid) pairs
        parts = [json.loads(Path(f).read_text()) for f in args.report_from]
        rows = [r for part in parts for r in part["rows"]]
        spacings = {k: v for part in parts for k, v in part["spacings"].items()}
        Path(args.output + ".json").write_text(json.dumps({"rows": rows, "spacings": spacings}, indent=1))
        names = [k for k in rows[0] if k not in ROW_FIELDS and not k.endswith((" slices", " stops"))]
        write_report(rows, spacings, names, args.output)
        return
    torch.set_num_threads(2)
    cases = [c for c in CASES if not args.cases or any(s in c for s in args.cases)]
    official = None
    if args.official_from:
        earlier = json.loads(Path(args.official_from).read_text())["rows"]
        official = {(r["case"], r["grid"], int(r["label"])): r["official"] for r in earlier}
    run(cases, args.grids, variants(args.previous), args.embeddings_dir, args.output, official)


if __name__ == "__main__":
    main()
