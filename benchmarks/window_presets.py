"""Propagation Dice per intensity window: the official rule, Slicer's automatic W/L and Slicer's CT presets.

In Slicer the model can be fed the volume's display window/level instead of MedSAM's official
pre-processing. This measures what each choice costs: default-mode propagation
(`propagation.segment_volume`) from the official reference boxes of ../shared/reference/summary.json
(reference slice range, as `benchmarks/compare_modes.py` makes them), real LiteMedSAM, float32 CPU,
Dice against the case labels.

Windows:
- official: `intensity.auto_window(volume, modality=...)`, what the command line does
  (CT 40/400 with min-max of the clipped volume; MR 0.5-99.5 percentiles of the voxels > 0);
- slicer auto: the W/L Slicer gives a freshly loaded volume, read from slicer-core's volumes logic
  (`AddArchetypeVolume`, then the display node's GetWindow()/GetLevel()), used as an explicit window;
- CT only: Slicer's CT window/level presets (CT_PRESETS below), each as an explicit window.
An explicit (level, width) goes through `intensity.explicit_window`: [L - W/2, L + W/2] -> 0..255,
which is what the Slicer effect's "use the view's window/level" choice does.

Results are saved after every structure, so an interrupted run resumes where it stopped:

    nice -n 10 python benchmarks/window_presets.py [--only SUBSTRING] [--fresh] [--report-only]

Output: a Markdown table on stdout, benchmarks/results/window_presets.md and .json.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSAMSegment"))
from MedSAMSegmentLib.engine.metrics import dice  # noqa: E402

SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results"

# Slicer's CT window/level presets, (window, level), from Slicer/Slicer tag v5.10.0,
# Modules/Loadable/Volumes/Resources/VolumeDisplayPresets.json (ids CT_ABDOMEN, CT_LUNG, CT_BONE,
# CT_BRAIN, CT_AIR; the file is the same at v5.12.3 and on main at 583e9b37). Its other two
# presets, PET and DTI, are not CT windows.
PRESETS_SOURCE = "Slicer/Slicer v5.10.0, Modules/Loadable/Volumes/Resources/VolumeDisplayPresets.json"
CT_PRESETS = {
    "CT-Abdomen": (350.0, 40.0),
    "CT-Lung": (1400.0, -500.0),
    "CT-Bone": (1000.0, 400.0),
    "CT-Brain": (100.0, 50.0),
    "CT-Air": (1000.0, -426.0),
}
ISSUE_FIVE = ("spleen", "kidney_right", "gallbladder", "pancreas", "liver")  # issue 10's table
CASE_ORDER = ("ct_abdomen_pelvis_totalseg", "ct_upper_abdomen_hires_totalseg", "mr_abdomen_totalseg",
              "mr_brain1_tumor", "mr_cspine_t2_cord", "mr_cspine_t1_cord")


def image_path(case):
    return SHARED / "data" / "cases" / case / "image.nii.gz"


def load(case):
    import SimpleITK as sitk

    folder = SHARED / "data" / "cases" / case
    return (sitk.GetArrayFromImage(sitk.ReadImage(str(image_path(case)))),
            sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "label.nii.gz"))))


def slicer_auto_window_levels(cases):
    """{case: (window, level)} that Slicer's volumes logic gives each freshly loaded volume."""
    sys.path.insert(0, str(ROOT / "Testing"))
    from slicercore import SlicerCore

    core = SlicerCore()
    try:
        values = {}
        for case in cases:
            display = core.volumesLogic.AddArchetypeVolume(str(image_path(case)), case).GetDisplayNode()
            values[case] = (float(display.GetWindow()), float(display.GetLevel()))
        return values
    finally:
        core.close()


def windows_for(case, modality, auto_wl):
    """[(name, (window, level) or None for the official rule)] in the order they are measured."""
    windows = [("official", None), ("Slicer auto", auto_wl)]
    if modality == "CT":
        windows += list(CT_PRESETS.items())
    return windows


def work_groups(summary):
    """Structures grouped by case, the issue's five first so a short run still covers them."""
    items = [(name, info) for name, info in summary.items()]
    first = [(n, i) for n, i in items
             if n.split("/")[0] == CASE_ORDER[0] and n.split("/")[1] in ISSUE_FIVE]
    groups = [first]
    for case in CASE_ORDER:
        groups.append([(n, i) for n, i in items if n.split("/")[0] == case and (n, i) not in first])
    # Within a group the shortest slice ranges first: a run cut short has measured the most structures.
    return [sorted(g, key=lambda item: item[1]["box"][5] - item[1]["box"][2]) for g in groups if g]


def window_of(image, modality, window_level):
    from MedSAMSegmentLib.engine.intensity import auto_window

    explicit = None if window_level is None else (window_level[1], window_level[0])  # (level, width)
    return auto_window(image, modality=modality, window=explicit)


def record_windows(data, summary):
    """data["windows"]: what each window maps to 0..255 on each case (cheap: no model)."""
    modality = {n.split("/")[0]: i["modality"] for n, i in summary.items()}
    for case in CASE_ORDER:
        image, _ = load(case)
        data["windows"][case] = {wname: {"window_level": wl, **describe(window_of(image, modality[case], wl))}
                                 for wname, wl in windows_for(case, modality[case], data["slicer_auto"][case])}


def describe(window):
    return {"lo": window.lo, "hi": window.hi, "vmin": window.vmin, "vmax": window.vmax,
            "zero_stays_zero": window.zero_stays_zero, "description": window.description}


def git_commit():
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save(data, path):
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def measure(data, summary, only, json_path, chosen=None, threads=2):
    import torch

    from MedSAMSegmentLib.engine.predictor import Predictor
    from MedSAMSegmentLib.engine.propagation import segment_volume

    torch.set_num_threads(threads)
    pred = Predictor(device="cpu", precision="float32", cache_mb=4000)
    results = data.setdefault("dice", {})
    loaded_case = None
    for group in work_groups(summary):
        group = [(n, i) for n, i in group if only in n]
        if not group:
            continue
        case, modality = group[0][0].split("/")[0], group[0][1]["modality"]
        if case != loaded_case:  # embeddings are per window and case: keep only this case's
            pred.clear_cache()
            image, label = load(case)
            loaded_case = case
        for wname, wl in windows_for(case, modality, data["slicer_auto"][case]):
            if chosen and wname not in chosen:
                continue
            window = window_of(image, modality, wl)
            for name, info in group:
                if wname in results.get(name, {}):
                    continue
                encoded, t = pred.encoded, time.perf_counter()
                res = segment_volume(pred, image, window, list(info["box"]), axis="k", mode="default")
                score = dice(res.mask, label == info["label"])
                results.setdefault(name, {})[wname] = {
                    "dice": round(float(score), 4), "seconds": round(time.perf_counter() - t, 1),
                    "encoded": pred.encoded - encoded}
                save(data, json_path)
                print(f"  {name:48s} {wname:12s} {score:.4f}  ({pred.encoded - encoded} encoded, "
                      f"{time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)


def table(data, names, windows):
    lines = ["| structure | " + " | ".join(windows) + " |", "|---|" + "---:|" * len(windows)]
    for name in names:
        cells = []
        for w in windows:
            value = data["dice"].get(name, {}).get(w, {}).get("dice")
            cells.append("—" if value is None else f"{value:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    complete = [n for n in names if all(w in data["dice"].get(n, {}) for w in windows)]
    means = [f"**{np.mean([data['dice'][n][w]['dice'] for n in complete]):.3f}**" if complete else "—"
             for w in windows]
    lines.append(f"| **mean ({len(complete)} with every window)** | " + " | ".join(means) + " |")
    # Paired with the first window (official) on each structure measured with both, so a partial
    # run still compares like with like; (n) = how many structures.
    deltas = []
    for w in windows:
        scores = [data["dice"].get(n, {}) for n in names]
        pairs = [(d[w]["dice"], d[windows[0]]["dice"]) for d in scores if w in d and windows[0] in d]
        deltas.append(f"{np.mean([a - b for a, b in pairs]):+.3f} ({len(pairs)})" if pairs else "—")
    lines.append(f"| mean Δ vs {windows[0]} (n) | " + " | ".join(deltas) + " |")
    return lines


def report(data, summary):
    ct = [n for n, i in summary.items() if i["modality"] == "CT"]
    mr = [n for n, i in summary.items() if i["modality"] == "MR"]
    five = [f"{CASE_ORDER[0]}/{s}" for s in ISSUE_FIVE]
    ct_windows = ["official", "Slicer auto", *CT_PRESETS]
    out = ["# Propagation Dice per intensity window", "",
           "Output of `benchmarks/window_presets.py`: default-mode propagation (`segment_volume`) from the "
           "official reference boxes (reference slice range), LiteMedSAM float32 on CPU, Dice against the "
           "case labels. *official* is `intensity.auto_window` (CT 40/400 with min-max of the clipped "
           "volume; MR 0.5-99.5 percentiles of the voxels > 0), what the command line does. *Slicer auto* "
           "is the W/L slicer-core's volumes logic gives the freshly loaded volume; it and the presets are "
           "explicit windows ([L - W/2, L + W/2] -> 0..255, `intensity.explicit_window`), which is what "
           "\"use the view's window/level\" gives the model.",
           "", f"Code at commit {data['commit']}; torch {data['torch']}; {data['started']} UTC. A run may be "
           "split over processes (`--windows`, `--json`, `--merge`); torch's thread count changes float32 sums, "
           "so a Dice can differ in the 4th decimal from a run with another thread count.", "",
           "## CT", "", *table(data, ct, ct_windows), "",
           "The five structures of issue 10's table:", "", *table(data, five, ct_windows), "",
           "## MR", "", *table(data, mr, ["official", "Slicer auto"]), "",
           "## Windows", "",
           f"CT presets (window / level) from {PRESETS_SOURCE}: "
           + ", ".join(f"{k} {w:g} / {lv:g}" for k, (w, lv) in CT_PRESETS.items()) + ".", "",
           "| case | window | W / L | grey 0..255 spans (HU or scanner units) |", "|---|---|---|---|"]
    for case in CASE_ORDER:
        for wname, w in data["windows"].get(case, {}).items():
            wl = w["window_level"]
            wl_text = "rule" if wl is None else f"{wl[0]:g} / {wl[1]:g}"
            span = f"[{w['vmin']:g}, {w['vmax']:g}]" + (" (zeros stay 0)" if w["zero_stays_zero"] else "")
            out.append(f"| {case} | {wname} | {wl_text} | {span} |")
    missing = [(n, [w for w in (ct_windows if n in ct else ct_windows[:2]) if w not in data["dice"].get(n, {})])
               for n in ct + mr]
    missing = [f"{n} ({', '.join(ws)})" for n, ws in missing if ws]
    if missing:
        out += ["", f"Not measured ({len(missing)} structures): " + "; ".join(missing) + "."]
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="measure structures whose name contains this")
    parser.add_argument("--fresh", action="store_true", help="ignore saved results and start again")
    parser.add_argument("--report-only", action="store_true", help="write the tables from the saved results")
    parser.add_argument("--windows", default="", help="comma-separated window names to measure (default: all)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (1 with several processes on a loaded machine)")
    parser.add_argument("--json", type=Path, default=RESULTS / "window_presets.json",
                        help="results file (a second process, e.g. --only mr_, needs its own)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="results files of other processes to fold into --json before the report")
    args = parser.parse_args(argv)
    json_path, md_path = args.json, RESULTS / "window_presets.md"
    summary = json.loads((SHARED / "reference" / "summary.json").read_text())
    if json_path.exists() and not args.fresh:
        data = json.loads(json_path.read_text())
    else:
        import torch

        data = {"commit": git_commit(), "torch": torch.__version__,
                "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                "presets_source": PRESETS_SOURCE, "windows": {}, "dice": {}}
    for other in (json.loads(path.read_text()) for path in args.merge):
        for name, scores in other["dice"].items():
            data["dice"].setdefault(name, {}).update(scores)
        for case, windows in other["windows"].items():
            data["windows"].setdefault(case, {}).update(windows)
    if args.merge:
        save(data, json_path)
    if not args.report_only:
        data["slicer_auto"] = slicer_auto_window_levels(CASE_ORDER)
        for case, (w, lv) in data["slicer_auto"].items():
            print(f"Slicer auto W/L {case}: W {w:g} / L {lv:g}", file=sys.stderr)
        measure(data, summary, args.only, json_path, [w for w in args.windows.split(",") if w],
                args.threads)
        save(data, json_path)
    record_windows(data, summary)
    text = report(data, summary)
    md_path.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
