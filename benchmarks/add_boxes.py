"""Dice after 1, 2 and 3 boxes (key-slice boxes), with a simulated user; prints Markdown tables.

Protocol (README "Correcting with more boxes"):
  - box 1: the official box, the label's tight in-plane box on its middle slice over the label's
    slice range (the reference box for the 24 reference structures);
  - boxes 2 and 3: among the slices of the label's range where the label is present and that are
    not prompted yet, the one with the most wrong voxels (false positives + false negatives) gets
    the label's tight box on that slice. Slices without the label are never prompted.
Default propagation mode, axis k. Each added box is run with previous= the last result, so only the
slices it can change are decoded (embeddings are cached: the time is decoder time, cache warm).
Every meeting rule of key_boxes.MEET_RULES is measured; rules other than the first re-use the first
rule's propagations for box 2 (the same runs), and pick their own box 3.

    nice -n 10 python benchmarks/add_boxes.py [--only SUBSTRING] [--no-extra] [--json OUT.json]
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
from compare_modes import SHARED, extra_items, label_box, load  # noqa: E402

from MedSAMSegmentLib import key_boxes  # noqa: E402
from MedSAMSegmentLib.metrics import dice  # noqa: E402


CASE_ORDER = ("mr_brain1_tumor", "mr_abdomen_totalseg", "ct_upper_abdomen_hires_totalseg",
              "ct_abdomen_pelvis_totalseg", "mr_cspine_t2_cord", "mr_cspine_t1_cord")


def next_box(mask, gt, prompted, first, last):
    """The simulated user's next box: (slice, tight 2D box) on the present, unprompted slice with the
    most wrong voxels; None when every present slice is prompted."""
    best = None
    for k in range(first, last + 1):
        if k in prompted or not gt[k].any():
            continue
        wrong = int((mask[k] != gt[k]).sum())
        if best is None or wrong > best[0]:
            best = (wrong, k)
    if best is None:
        return None
    k = best[1]
    ys, xs = np.nonzero(gt[k])
    return k, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def keep_embeddings(pred, image, window, box, folder):
    """Load the box's slice embeddings from `folder` (one file per slice content key) into the cache;
    returns a function that saves the ones not there yet. Lets a stopped run resume cheaply."""
    import hashlib

    import torch

    from MedSAMSegmentLib.propagation import _SliceSource

    if not folder:
        return lambda: None
    source = _SliceSource(pred, image, window, "k")
    keys = [source.key(k) for k in range(box[2], box[5] + 1)]
    files = {key: Path(folder) / (hashlib.sha1(repr(key).encode()).hexdigest() + ".pt") for key in keys}
    for key, path in files.items():
        if key not in pred.cache and path.exists():
            pred.cache.put(key, torch.load(path))

    def save():
        for key, path in files.items():
            emb = pred.cache.get(key)
            if emb is not None and not path.exists():
                torch.save(emb, path)

    return save


def measure(pred, image, window, gt, box, rules_order):
    """{rule: [dice1, dice2, dice3]}, {rule: [seconds, decoded slices] per added box}."""
    from MedSAMSegmentLib.propagation import segment_volume

    first, last = box[2], box[5]
    one = segment_volume(pred, image, window, box, axis="k", mode="default")
    scores, costs = {}, {}
    box2 = next_box(one.mask, gt, {one.key_slice}, first, last)
    shared_second = None
    for rule in rules_order:
        key_boxes.MEET_RULE = rule
        results, added, cost = [one], [], []
        for n in range(2):
            nb = next_box(results[-1].mask, gt, set(results[-1].key_slices), first, last) if n else box2
            if nb is None:
                results.append(results[-1])
                continue
            added.append(nb)
            previous = results[-1] if (n or shared_second is None) else shared_second
            t = time.perf_counter()
            res = segment_volume(pred, image, window, box, axis="k", mode="default", add_boxes=list(added),
                                 previous=previous)
            cost.append((time.perf_counter() - t, len(res.slices)))
            if n == 0 and shared_second is None:
                shared_second = res
            results.append(res)
        scores[rule] = [dice(r.mask, gt) for r in results]
        costs[rule] = cost
    return scores, costs


def main(argv=None):
    import torch

    from MedSAMSegmentLib.intensity import auto_window
    from MedSAMSegmentLib.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run structures whose name contains this")
    parser.add_argument("--no-extra", action="store_true", help="skip the 94 labels outside the reference set")
    order = [key_boxes.MEET_RULE] + [r for r in key_boxes.MEET_RULES if r != key_boxes.MEET_RULE]
    parser.add_argument("--rules", default=",".join(order), help="meeting rules, comma-separated; "
                        "the first one's per-structure table and times are printed")
    parser.add_argument("--json", default="", help="write every number here (updated after each structure)")
    parser.add_argument("--extra-rules", default=key_boxes.MEET_RULE,
                        help="meeting rules for the 94 other labels (default: the engine's)")
    parser.add_argument("--embeddings-dir", default="", help="keep slice embeddings here between runs")
    parser.add_argument("--report", default="", help="only print the tables of a --json file")
    args = parser.parse_args(argv)
    if args.report:
        return report(json.loads(Path(args.report).read_text()))
    torch.set_num_threads(2)
    pred = Predictor(device="cpu", precision="float32", cache_mb=6000)
    rules, extra_rules = args.rules.split(","), args.extra_rules.split(",")
    if args.embeddings_dir:
        Path(args.embeddings_dir).mkdir(parents=True, exist_ok=True)
    summary = json.loads((SHARED / "reference" / "summary.json").read_text())
    items = [("reference", n, n.split("/")[0], i["label"], i["modality"], list(i["box"]))
             for n, i in summary.items() if args.only in n]
    if not args.no_extra:
        items += [("extra",) + item for item in extra_items(summary) if args.only in item[0]]
    # Cheapest encoder work first (the slices of the 20-slice cases serve many labels), so that a run
    # cut short still covers as many structures as possible; results do not depend on the order.
    cost = {c: n for n, c in enumerate(CASE_ORDER)}
    items.sort(key=lambda item: (cost.get(item[2], len(CASE_ORDER)), item[0] != "reference"))
    out, cache = [], {}
    for group, name, case, value, modality, box in items:
        if case not in cache:
            image, label = load(case)
            cache = {case: (image, label, auto_window(image, modality=modality))}
        image, label, window = cache[case]
        gt = label == value
        assert box == label_box(gt) or group == "reference", name
        save = keep_embeddings(pred, image, window, box, args.embeddings_dir)
        scores, costs = measure(pred, image, window, gt, box, rules if group == "reference" else extra_rules)
        save()
        row = {"group": group, "name": name, "slices": box[5] - box[2] + 1, "dice": scores, "added": costs}
        out.append(row)
        times = ",".join(f"{c[0]:.2f}({c[1]})" for c in next(iter(costs.values())))
        print(f"  {name:48s} " + "  ".join(f"{r} " + "/".join(f"{d:.3f}" for d in s) for r, s in scores.items())
              + f"  s/box {times}", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    report(out)


def report(rows):
    groups = (("reference", "24 reference structures"), ("extra", "94 other labels of the TotalSegmentator cases"))
    for group, title in groups:
        part = [r for r in rows if r["group"] == group]
        rules = list(part[0]["dice"]) if part else []
        if not part:
            continue
        print(f"\n### {title}: mean Dice after N boxes, by meeting rule\n")
        print("| meeting rule | 1 box | 2 boxes | 3 boxes | structures losing > 0.01 from an added box |")
        print("|---|---:|---:|---:|---:|")
        for rule in rules:
            d = np.array([r["dice"][rule] for r in part])
            losers = sum(bool(np.any(np.diff(r["dice"][rule]) < -0.01)) for r in part)
            print(f"| {rule} | {d[:, 0].mean():.4f} | {d[:, 1].mean():.4f} | {d[:, 2].mean():.4f} | {losers} |")
        rule = rules[0]
        print(f"\n### {title}: per structure, meeting rule `{rule}`\n")
        print("| structure | slices | 1 box | 2 boxes | 3 boxes | s per added box (slices decoded) |")
        print("|---|---:|---:|---:|---:|---|")
        for r in part:
            d = r["dice"][rule]
            cost = ", ".join(f"{c[0]:.2f} s ({c[1]})" for c in r["added"][rule])
            print(f"| {r['name']} | {r['slices']} | {d[0]:.4f} | {d[1]:.4f} | {d[2]:.4f} | {cost} |")
        times = [c for r in part for c in r["added"][rule]]
        if times:
            per_slice = sum(c[0] for c in times) / max(1, sum(c[1] for c in times))
            print(f"\nAdded boxes: {len(times)}, mean {np.mean([c[0] for c in times]):.2f} s, "
                  f"max {max(c[0] for c in times):.2f} s, {per_slice * 1000:.0f} ms per decoded slice.")


if __name__ == "__main__":
    main()
