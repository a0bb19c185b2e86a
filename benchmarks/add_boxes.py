"""Dice after 1, 2 and 3 boxes (key-slice boxes), with a simulated user; prints Markdown tables.

Protocol (README "Correcting with more boxes"):
  - box 1: the official box, the label's tight in-plane box on its middle slice over the label's
    slice range (the reference box for the 24 reference structures);
  - boxes 2 and 3: among the slices of the label's range where the label is present and that are
    not prompted yet, the one with the most wrong voxels (false positives + false negatives) gets
    the label's tight box on that slice. Slices without the label are never prompted.
Default propagation mode, axis k. Each added box is run with previous= the last result, so only the
slices it can change are decoded (embeddings are cached: the time is decoder time, cache warm).
Every meeting rule of key_boxes.MEET_RULES is measured, each with its own boxes 2 and 3.

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

from MedSAMSegmentLib.engine import key_boxes  # noqa: E402
from MedSAMSegmentLib.engine.metrics import dice  # noqa: E402


CASE_ORDER = ("mr_brain1_tumor", "mr_abdomen_totalseg", "ct_upper_abdomen_hires_totalseg",
              "ct_abdomen_pelvis_totalseg", "mr_cspine_t2_cord", "mr_cspine_t1_cord")


def structure_class(name, millilitres):
    """The classes of benchmarks/robustness.py, its "tubular" (vessels, cord, oesophagus, ...) named "vessel"."""
    from robustness import structure_class as robustness_class

    found = robustness_class(name.split("/")[-1], millilitres)
    return "vessel" if found == "tubular" else found


def label_millilitres(case, value):
    import SimpleITK as sitk

    label = sitk.ReadImage(str(SHARED / "data" / "cases" / case / "label.nii.gz"))
    return float((sitk.GetArrayViewFromImage(label) == value).sum()) * float(np.prod(label.GetSpacing())) / 1000


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
    x0, y0 = int(xs.min()), int(ys.min())
    # A box is at least 2 x 2 voxels (the engine's minimum): a one-voxel-wide label gets the next column/row.
    x0, y0 = min(x0, gt.shape[2] - 2), min(y0, gt.shape[1] - 2)
    return k, (x0, y0, max(int(xs.max()), x0 + 1), max(int(ys.max()), y0 + 1))


def keep_embeddings(pred, image, window, box, folder):
    """Load the box's slice embeddings from `folder` (one file per slice content key) into the cache;
    returns a function that saves the ones not there yet. Lets a stopped run resume cheaply."""
    import hashlib

    import torch

    from MedSAMSegmentLib.engine.propagation import _SliceSource

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
    from MedSAMSegmentLib.engine.propagation import segment_volume

    first, last = box[2], box[5]
    one = segment_volume(pred, image, window, box, axis="k", mode="default")
    scores, costs = {}, {}
    for rule in rules_order:
        key_boxes.MEET_RULE = rule
        results, added, cost = [one], [], []
        for _ in range(2):
            nb = next_box(results[-1].mask, gt, set(results[-1].key_slices), first, last)
            if nb is None:
                results.append(results[-1])
                continue
            added.append(nb)
            t = time.perf_counter()
            res = segment_volume(pred, image, window, box, axis="k", mode="default", add_boxes=list(added),
                                 previous=results[-1])
            cost.append((time.perf_counter() - t, len(res.slices)))
            results.append(res)
        scores[rule] = [dice(r.mask, gt) for r in results]
        costs[rule] = cost
    return scores, costs


def decoder_ms(pred, prompts=40):
    """Median ms of one box through the fast decoder's transformer on a fixed random embedding: the
    machine's speed at the moment, to read the seconds of a shared VM by (10 ms when it runs well)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(256, 64, 64, generator=generator)
    with torch.inference_mode():
        sparse, _ = pred._box_prompts([60, 70, 150, 160])
        pred._decoder.prompted(embedding, sparse)
        spent = []
        for _ in range(prompts):
            start = time.perf_counter()
            pred._decoder.prompted(embedding, sparse)
            spent.append(time.perf_counter() - start)
    return 1000 * sorted(spent)[prompts // 2]


def timing(pred, names, folder, repeats=5):
    """Seconds (wall and CPU) and decoder calls per added box of the named structures, cache warm.

    The repeats go round all the boxes in turn, so that a minute in which this shared machine runs
    slowly (its speed changes by up to half, with no steal time reported) slows one repeat of every box, not
    every repeat of one. The best of the repeats is the box's cost (what `timeit` reports: slower
    repeats are interference); the median is printed beside it. The CPU time is what the box costs
    on an otherwise idle machine when the wall time is inflated by other jobs."""
    from MedSAMSegmentLib.engine.intensity import auto_window
    from MedSAMSegmentLib.engine.propagation import segment_volume

    calls = [0]

    def counted(decode):
        def call(*args, **kwargs):
            calls[0] += 1
            return decode(*args, **kwargs)
        return call

    # a call: one batch of boxes through the transformer (their masks are made as needed)
    pred.decode_logits, pred.decode_candidates = counted(pred.decode_logits), counted(pred.decode_candidates)
    summary = json.loads((SHARED / "reference" / "summary.json").read_text())
    # a reference structure, or one of the other labels (CASE/LABEL-NAME)
    known = {n: (i["label"], i["modality"], list(i["box"])) for n, i in summary.items()}
    if any(name not in known for name in names):
        known.update({n: (value, modality, list(box)) for n, _, value, modality, box in extra_items(summary)})
    jobs = []  # (name, box number, kwargs of the timed call, its result, decoder calls)
    for name in names:
        if name not in known:
            raise SystemExit(f"--timing: no structure {name!r} (CASE/STRUCTURE, as the tables name them)")
        value, modality, box = known[name]
        image, label = load(name.split("/")[0])
        window, gt = auto_window(image, modality=modality), label == value
        keep_embeddings(pred, image, window, box, folder)()
        results, added = [segment_volume(pred, image, window, box, axis="k", mode="default")], []
        for n in range(2):
            added.append(next_box(results[-1].mask, gt, set(results[-1].key_slices), box[2], box[5]))
            call = dict(volume=image, window=window, box_ijk=box, axis="k", mode="default", add_boxes=list(added),
                        previous=results[-1])
            calls[0] = 0
            results.append(segment_volume(pred, **call))
            jobs.append((name, n + 2, call, results[-1], calls[0], dice(results[-1].mask, gt), box[5] - box[2] + 1))
    times = [[] for _ in jobs]
    print(f"\nthis machine's speed before the repeats: {decoder_ms(pred):.1f} ms per box through the decoder's transformer")
    for _ in range(repeats):
        for job, spent in zip(jobs, times):
            wall, cpu = time.perf_counter(), time.process_time()
            segment_volume(pred, **job[2])
            spent.append((time.perf_counter() - wall, time.process_time() - cpu))
    print(f"this machine's speed after the repeats: {decoder_ms(pred):.1f} ms per box through the decoder's transformer")
    print(f"\nbest and median of {repeats} repeats, taken in turn over all {len(jobs)} added boxes\n")
    print("| structure | slices | added box | slice | slices decoded | decoder calls | wall s (best) | wall s (median) "
          "| CPU s (best) | Dice |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (name, n, call, res, count, score, length), spent in zip(jobs, times):
        walls = sorted(w for w, _ in spent)
        print(f"| {name} | {length} | {n} | {call['add_boxes'][-1][0]} | {len(res.slices)} | {count} | {walls[0]:.2f} | "
              f"{walls[len(walls) // 2]:.2f} | {min(c for _, c in spent):.2f} | {score:.4f} |")


def main(argv=None):
    import torch

    from MedSAMSegmentLib.engine.intensity import auto_window
    from MedSAMSegmentLib.engine.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run structures whose name contains this")
    parser.add_argument("--no-extra", action="store_true", help="skip the 94 labels outside the reference set")
    parser.add_argument("--extra-only", action="store_true", help="only the 94 labels outside the reference set")
    order = [key_boxes.MEET_RULE] + [r for r in key_boxes.MEET_RULES if r != key_boxes.MEET_RULE]
    parser.add_argument("--rules", default=",".join(order), help="meeting rules, comma-separated; "
                        "the first one's per-structure table and times are printed")
    parser.add_argument("--json", default="", help="write every number here (updated after each structure)")
    parser.add_argument("--extra-rules", default=key_boxes.MEET_RULE,
                        help="meeting rules for the 94 other labels (default: the engine's)")
    parser.add_argument("--embeddings-dir", default="", help="keep slice embeddings here between runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s; on a "
                        "machine shared with other jobs 1 is far faster, the Dice is the same)")
    parser.add_argument("--resume", action="store_true", help="keep the structures already in --json")
    parser.add_argument("--timing", nargs="+", metavar="CASE/STRUCTURE",
                        help="only time the added boxes of these structures (reference or other labels)")
    parser.add_argument("--report", default="", help="only print the tables of a --json file")
    args = parser.parse_args(argv)
    if args.report:
        return report(json.loads(Path(args.report).read_text()))
    if args.timing:
        torch.set_num_threads(args.threads)
        pred = Predictor(device="cpu", precision="float32", cache_mb=6000)  # every structure's slices
        return timing(pred, args.timing, args.embeddings_dir)
    torch.set_num_threads(args.threads)
    pred = Predictor(device="cpu", precision="float32", cache_mb=6000)
    rules, extra_rules = args.rules.split(","), args.extra_rules.split(",")
    if args.embeddings_dir:
        Path(args.embeddings_dir).mkdir(parents=True, exist_ok=True)
    summary = json.loads((SHARED / "reference" / "summary.json").read_text())
    items = [("reference", n, n.split("/")[0], i["label"], i["modality"], list(i["box"]))
             for n, i in summary.items() if args.only in n and not args.extra_only]
    if not args.no_extra:
        items += [("extra",) + item for item in extra_items(summary) if args.only in item[0]]
    # Cheapest encoder work first (the slices of the 20-slice cases serve many labels), so that a run
    # cut short still covers as many structures as possible; results do not depend on the order.
    cost = {c: n for n, c in enumerate(CASE_ORDER)}
    items.sort(key=lambda item: (cost.get(item[2], len(CASE_ORDER)), item[0] != "reference"))
    out, cache = [], {}
    if args.resume and args.json and Path(args.json).exists():  # continue a run that was stopped
        out = json.loads(Path(args.json).read_text())
        items = [item for item in items if item[1] not in {row["name"] for row in out}]
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
        row = {"group": group, "name": name, "slices": box[5] - box[2] + 1, "dice": scores, "added": costs,
               "class": structure_class(name, label_millilitres(case, value))}
        out.append(row)
        times = ",".join(f"{c[0]:.2f}({c[1]})" for c in next(iter(costs.values())))
        print(f"  {name:48s} " + "  ".join(f"{r} " + "/".join(f"{d:.3f}" for d in s) for r, s in scores.items())
              + f"  s/box {times}", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    report(out)


def with_classes(rows):
    """Rows from an older --json without "class": look the label value up and classify."""
    summary = json.loads((SHARED / "reference" / "summary.json").read_text())
    for row in rows:
        if "class" not in row:
            case, struct = row["name"].split("/", 1)
            if row["group"] == "reference":
                value = summary[row["name"]]["label"]
            else:
                names = json.loads((SHARED / "data" / "cases" / case / "labels.json").read_text())
                value = next(int(v) for v, n in names.items() if n == struct)
            row["class"] = structure_class(row["name"], label_millilitres(case, value))
    return rows


def class_table(part, rule):
    print("\n| class | structures | 1 box | 2 boxes | 3 boxes | gain from boxes 2 and 3 |")
    print("|---|---:|---:|---:|---:|---:|")
    for cls in ("large organ", "small organ", "vessel", "bone", "lesion"):
        d = np.array([r["dice"][rule] for r in part if r["class"] == cls])
        if len(d):
            print(f"| {cls} | {len(d)} | {d[:, 0].mean():.4f} | {d[:, 1].mean():.4f} | {d[:, 2].mean():.4f} | "
                  f"{d[:, 2].mean() - d[:, 0].mean():+.4f} |")


def report(rows):
    rows = with_classes(rows)
    groups = (("reference", "reference structures", 24), ("extra", "other labels of the TotalSegmentator cases", 94))
    for group, what, of in groups:
        part = [r for r in rows if r["group"] == group]
        title = f"{what} ({len(part)} of {of})"
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
        print(f"\n### {title}: by structure class, meeting rule `{rule}`")
        class_table(part, rule)
        print(f"\n### {title}: per structure, meeting rule `{rule}`\n")
        print("| structure | slices | 1 box | 2 boxes | 3 boxes | wall s per added box (slices decoded) |")
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
