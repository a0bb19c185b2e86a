"""Speed and accuracy of the engine against the official LiteMedSAM procedure, in one run.

Prints Markdown tables (times are per *encoded* slice):
1. per model, device and encoder variant: encoder and decoder milliseconds per slice (batch 1,
   minimum of --reps runs) and a re-prompt (a new box on a slice whose embedding is cached);
2. per ../shared/reference structure and configuration: whole-propagation seconds, seconds per
   encoded slice, Dice against the label and against the official output. The "official"
   configuration is the baseline: the reference float32 encoder, batch 1, official mode;
3. peak RSS of a whole process that propagates through a 512x512x300 CT (--rss);
4. on a GPU (--sweep): encoder slices per second at batch 1..32 in float16 / bfloat16, and a
   MedSAM ViT-B propagation through 100 slices (random weights unless a checkpoint is found).

Inputs are the official uint8 volumes (`_input_uint8.npz`), so no windowing differs between
configurations; labels are read with SimpleITK when it and ../shared/data/cases are there.
Each configuration starts every structure with an empty embedding cache, as the official
script does. Other processes on the machine slow every configuration alike: compare within
one run, and repeat.

    python benchmarks/benchmark.py --structures gallbladder,brain --configs official,fp32,bf16
    python benchmarks/benchmark.py --rss                       # whole-process peak RSS only
    python benchmarks/benchmark.py --device cuda --sweep        # GPU throughput
"""

import argparse
import fnmatch
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSAMSegment"))
from MedSAMSegmentLib.engine.metrics import dice  # noqa: E402
SHARED = ROOT.parent / "shared"

# name -> (optimise, precision, propagation modes run for it)
CONFIGS = {
    "official": (False, "float32", ("official",)),
    "fp32": (True, "float32", ("official", "default")),
    "bf16": (True, "bfloat16", ("official", "default")),
    "fp16": (True, "float16", ("official", "default")),
}


class IdentityWindow:
    """The inputs are already the official uint8 volumes."""

    key = ("identity",)
    description = "official uint8 input"

    def apply(self, raw):
        return np.asarray(raw)


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_label(case):
    try:
        import SimpleITK as sitk
    except ImportError:
        return None
    path = SHARED / "data" / "cases" / case / "label.nii.gz"
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))) if path.is_file() else None


def select_structures(reference, patterns):
    names = sorted(json.loads((reference / "summary.json").read_text()).items())
    if not patterns:
        return names
    pats = [p if any(c in p for c in "*?[") else f"*{p}*" for p in patterns.split(",")]
    return [(n, i) for n, i in names if any(fnmatch.fnmatch(n, p) for p in pats)]


def make_predictor(model, device, config, checkpoint=None, batch_size=None):
    from MedSAMSegmentLib.engine.predictor import Predictor

    optimise, precision, _ = CONFIGS[config]
    return Predictor(model=model, checkpoint=checkpoint, device=device, precision=precision,
                     optimise=optimise, batch_size=batch_size, cache_mb=4096)


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def best_of(fn, reps, device="cpu", cpu_time=None):
    """Minimum wall time of `reps` calls after a warm-up; the minimum process CPU time goes to
    cpu_time (a list) when given: it moves less than wall time when other processes compete."""
    fn()  # warm-up: first-call allocations, oneDNN kernel selection
    times, cpu = [], []
    for _ in range(reps):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if cpu_time is not None:
        cpu_time.append(min(cpu))
    return min(times)


# ---------------------------------------------------------------- 1. encoder / decoder
def component_slice(reference):
    """The middle slice of a 512x512 CT liver where available, else of the first structure."""
    summary = json.loads((reference / "summary.json").read_text())
    name = "ct_upper_abdomen_hires_totalseg/liver"
    name = name if name in summary else sorted(summary)[0]
    info = summary[name]
    volume = np.load(reference / name.split("/")[0] / "_input_uint8.npz")["imgs"]
    x0, y0, _, x1, y1, _ = info["box"]
    return volume[info["z_mid"]], (x0, y0, x1, y1)


def component_times(pred, image, box, reps):
    """(encoder ms, encoder CPU ms, decoder ms, re-prompt ms) on one slice, batch 1."""
    hw = image.shape
    cpu = []
    enc = best_of(lambda: pred._encode_now([image]), reps, pred.device, cpu)
    emb = pred.embedding(("component", hw), image)
    model_box = pred.transform.box_exact(box, hw)
    dec = best_of(lambda: pred.decode(emb, model_box, hw), reps, pred.device)
    again = best_of(lambda: pred.segment_2d(image, box, cache_key=("component", hw)), reps, pred.device)
    return enc * 1e3, cpu[0] * 1e3, dec * 1e3, again * 1e3


# ---------------------------------------------------------------- 2. propagation per structure
def propagate(pred, volume, info, mode):
    from MedSAMSegmentLib.engine.propagation import segment_volume

    pred.clear_cache()
    before = pred.encoded
    t0 = time.perf_counter()
    res = segment_volume(pred, volume, IdentityWindow(), info["box"], axis="k", mode=mode)
    _sync(pred.device)
    seconds = time.perf_counter() - t0
    return res, seconds, pred.encoded - before


def structure_table(args, reference, structures, predictors):
    rows, volumes, labels = [], {}, {}
    for name, info in structures:
        case, structure = name.split("/")
        if case not in volumes:
            volumes[case] = np.load(reference / case / "_input_uint8.npz")["imgs"]
            labels[case] = load_label(case) if args.labels else None
        official = np.load(reference / case / f"{structure}.npz")["segs"]
        label = labels[case]
        for config, pred in predictors.items():
            for mode in CONFIGS[config][2]:
                if mode not in args.modes:
                    continue
                res, seconds, encoded = propagate(pred, volumes[case], info, mode)
                rows.append({
                    "structure": name, "config": config, "mode": mode, "seconds": seconds, "encoded": encoded,
                    "s_per_slice": seconds / max(1, encoded),
                    "dice_label": None if label is None else dice(res.mask, label == info["label"]),
                    "dice_official": dice(res.mask, official),
                })
                r = rows[-1]
                print(f"  {name:45s} {config:8s} {mode:8s} {seconds:7.2f} s {encoded:3d} slices "
                      f"{r['s_per_slice']:.3f} s/slice  Dice official {r['dice_official']:.4f}", file=sys.stderr)
    return rows


def print_structure_table(rows):
    columns = []
    for r in rows:
        if (r["config"], r["mode"]) not in columns:
            columns.append((r["config"], r["mode"]))
    head = " | ".join(f"{c}/{m}: s, s/slice, Dice label, Dice official" for c, m in columns)
    print(f"\n| structure | {head} |")
    print("|---" * (1 + len(columns)) + "|")
    by = {(r["structure"], r["config"], r["mode"]): r for r in rows}
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for name in dict.fromkeys(r["structure"] for r in rows):
        cells = []
        for c, m in columns:
            r = by.get((name, c, m))
            cells.append("-" if r is None else
                         f"{r['seconds']:.2f}, {r['s_per_slice']:.3f}, {fmt(r['dice_label'])}, {fmt(r['dice_official'])}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| config / mode | structures | encoded slices | seconds | s per encoded slice | speed-up vs official "
          "(per slice) | mean Dice label | mean Dice official | worst Dice official |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = [r for r in rows if r["config"] == "official"]
    base_rate = sum(r["seconds"] for r in base) / max(1, sum(r["encoded"] for r in base)) if base else None
    for c, m in columns:
        sel = [r for r in rows if (r["config"], r["mode"]) == (c, m)]
        secs, enc = sum(r["seconds"] for r in sel), sum(r["encoded"] for r in sel)
        rate = secs / max(1, enc)
        labels = [r["dice_label"] for r in sel if r["dice_label"] is not None]
        speed = f"{base_rate / rate:.2f}x" if base_rate else "-"
        print(f"| {c} / {m} | {len(sel)} | {enc} | {secs:.1f} | {rate:.3f} | {speed} | "
              f"{np.mean(labels) if labels else float('nan'):.4f} | {np.mean([r['dice_official'] for r in sel]):.4f} | "
              f"{min(r['dice_official'] for r in sel):.4f} |")


# ---------------------------------------------------------------- 3. peak RSS, whole process
def distinct_tiles(one, depth):
    """`depth` slices from copies of a real volume, each copy shifted by a few pixels: the
    embedding cache is content-addressed, so repeated slices would hide encoder work."""
    copies = []
    for n in range(depth // len(one) + 1):
        copy = one if n % 2 == 0 else one[::-1]
        copies.append(np.roll(copy, shift=2 * n, axis=2))
    return np.ascontiguousarray(np.concatenate(copies)[:depth])


def rss_child(args):
    """Own process: import, load, window and propagate a synthetic 512x512x300 CT; peak RSS."""
    start = time.perf_counter()
    import SimpleITK as sitk

    from MedSAMSegmentLib.engine.intensity import auto_window
    from MedSAMSegmentLib.engine.predictor import Predictor
    from MedSAMSegmentLib.engine.propagation import segment_volume

    case = SHARED / "data" / "cases" / "ct_upper_abdomen_hires_totalseg" / "image.nii.gz"
    one = sitk.GetArrayFromImage(sitk.ReadImage(str(case)))  # (20, 512, 512) int16
    volume = distinct_tiles(one, args.rss_depth)
    del one
    window = auto_window(volume, modality="CT")
    pred = Predictor(model="litemedsam", device=args.device, precision=CONFIGS[args.rss_config][1],
                     optimise=CONFIGS[args.rss_config][0])
    z0 = (args.rss_depth - args.rss_slices) // 2
    box = (107, 196, z0, 269, 374, z0 + args.rss_slices - 1)  # the liver's in-plane box
    t0 = time.perf_counter()
    res = segment_volume(pred, volume, window, box, axis="k", mode="official")
    propagation = time.perf_counter() - t0
    print(json.dumps({
        "shape": list(volume.shape), "dtype": str(volume.dtype), "slices": len(res.slices), "encoded": pred.encoded,
        "propagation_s": propagation, "process_s": time.perf_counter() - start,
        "peak_rss_mb": rss_mb(), "cache_mb": pred.cache.nbytes / 2**20, "config": args.rss_config,
    }))


def rss_table(args):
    cmd = [sys.executable, __file__, "--rss-child", "--device", args.device, "--rss-slices", str(args.rss_slices),
           "--rss-depth", str(args.rss_depth), "--rss-config", args.rss_config]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    r = json.loads(out)
    wall = time.perf_counter() - t0
    print("\n| volume | config | slices encoded | propagation s | s per slice | whole process s | "
          "whole process s per slice | peak RSS MB | embedding cache MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {'x'.join(map(str, r['shape'][::-1]))} {r['dtype']} | {r['config']} | {r['encoded']} | "
          f"{r['propagation_s']:.1f} | {r['propagation_s'] / max(1, r['encoded']):.3f} | {wall:.1f} | "
          f"{wall / max(1, r['encoded']):.3f} | {r['peak_rss_mb']:.0f} | {r['cache_mb']:.0f} |")
    return r


# ---------------------------------------------------------------- 4. GPU sweep
def random_checkpoint(model, folder):
    """A state dict of randomly initialised weights (timing only), saved where Predictor can load it."""
    import torch

    from MedSAMSegmentLib.model.models import build_network

    path = Path(folder) / f"{model}_random.pth"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(build_network(model).state_dict(), path)
    return str(path)


def sweep(args, checkpoints):
    import torch

    from MedSAMSegmentLib.engine.predictor import Predictor
    from MedSAMSegmentLib.model.fast_encoder import make_encoder

    print("\n| model | device | precision | encoder | batch | slices/s | ms per slice |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for model in args.models.split(","):
        pred = Predictor(model=model, checkpoint=checkpoints.get(model), device=args.device, precision="float32")
        size = pred.spec.image_size
        for precision in args.sweep_precisions.split(","):
            dtype = getattr(torch, precision)
            for optimise in ((True, False) if model == "litemedsam" else (False,)):
                encode = make_encoder(pred.network.image_encoder, pred.device, dtype, optimise)
                for batch in [int(b) for b in args.sweep_batches.split(",")]:
                    x = torch.rand(batch, 3, size, size, device=pred.device)
                    try:
                        with torch.inference_mode():
                            sec = best_of(lambda: encode(x), args.reps, pred.device)
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        print(f"| {model} | {args.device} | {precision} | {'fast' if optimise else 'reference'} | {batch} | OOM | - |")
                        break
                    kind = "fast" if optimise else "reference"
                    results.append({"model": model, "precision": precision, "encoder": kind, "batch": batch,
                                    "slices_per_s": batch / sec})
                    print(f"| {model} | {args.device} | {precision} | {kind} | {batch} | {batch / sec:.1f} | "
                          f"{sec / batch * 1e3:.2f} |", flush=True)
        del pred
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return results


class _PreparedVitB:
    """Proposal measured beside the engine's ViT-B pre-processing, not a change to it: resize the
    grey slice once (the three channels are equal, so the result is bit-identical) and prepare
    all slices of the range in a thread pool (scikit-image's resize releases the GIL)."""

    def __init__(self, transform, volume):
        from concurrent.futures import ThreadPoolExecutor
        from skimage.transform import resize

        self.base = transform

        def one(k):
            size = (transform.size, transform.size)
            grey = resize(volume[k], size, order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
            lo, hi = float(grey.min()), float(grey.max())
            norm = ((grey.astype(np.float64) - lo) / max(hi - lo, 1e-8)).astype(np.float32)
            return np.repeat(norm[None], 3, axis=0)

        with ThreadPoolExecutor(os.cpu_count()) as pool:
            self.ready = {volume[k].tobytes().__hash__(): t for k, t in zip(range(len(volume)), pool.map(one, range(len(volume))))}

    def image_tensor(self, image):
        return self.ready[image.tobytes().__hash__()]

    def __getattr__(self, name):
        return getattr(self.base, name)


def vitb_propagation(args, reference, checkpoint, slices=100):
    """MedSAM ViT-B through `slices` slices of a real volume (tiled), official mode (no early stop)."""
    from MedSAMSegmentLib.engine.predictor import Predictor
    from MedSAMSegmentLib.engine.propagation import segment_volume

    one = np.load(reference / "mr_brain1_tumor" / "_input_uint8.npz")["imgs"]
    volume = distinct_tiles(one, slices)
    print("\n| model | device | precision | batch | pre-processing | slices | propagation s | s per slice |")
    print("|---|---|---|---|---|---|---|---|")
    out = []
    runs = [(p, "engine") for p in args.sweep_precisions.split(",")[:1]]
    runs += [(p, "grey+threads") for p in args.sweep_precisions.split(",")]
    for precision, prep in runs:
        pred = Predictor(model="medsam-vit-b", checkpoint=checkpoint, device=args.device, precision=precision,
                         batch_size=args.vitb_batch)
        segment_volume(pred, volume[:2], IdentityWindow(), (80, 80, 0, 180, 180, 1), mode="official")  # warm-up
        engine_transform = pred.transform
        t0 = time.perf_counter()
        if prep != "engine":
            pred.transform = _PreparedVitB(engine_transform, volume)
        prepared = time.perf_counter() - t0
        if prep != "engine":
            first = pred.transform.image_tensor(volume[0])
            assert np.array_equal(first, engine_transform.image_tensor(volume[0])), "grey resize differs"
        res, seconds, encoded = propagate(pred, volume, {"box": (80, 80, 0, 180, 180, slices - 1)}, "official")
        seconds += prepared
        out.append({"precision": precision, "preprocessing": prep, "slices": encoded, "seconds": seconds})
        print(f"| medsam-vit-b | {args.device} | {precision} | {pred.batch_size} | {prep} | {encoded} | {seconds:.2f} | "
              f"{seconds / encoded:.3f} |", flush=True)
        del pred
    return out


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, default=SHARED / "reference", help="folder with summary.json")
    p.add_argument("--structures", default="", help="comma-separated substrings or globs of case/structure")
    p.add_argument("--configs", default="official,fp32,bf16", help=f"of {', '.join(CONFIGS)}")
    p.add_argument("--modes", default="official,default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", help="lite_medsam.pth, where the embedded copy is not installed")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: one per physical core)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions for component times (minimum kept)")
    p.add_argument("--no-labels", dest="labels", action="store_false", help="skip Dice against the labels")
    p.add_argument("--skip-structures", action="store_true")
    p.add_argument("--skip-components", action="store_true")
    p.add_argument("--rss", action="store_true", help="also measure a 512x512x300 CT propagation in a new process")
    p.add_argument("--rss-slices", type=int, default=300)
    p.add_argument("--rss-depth", type=int, default=300)
    p.add_argument("--rss-config", default="fp32")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sweep", action="store_true", help="encoder throughput at several batch sizes (GPU)")
    p.add_argument("--models", default="litemedsam,medsam-vit-b")
    p.add_argument("--sweep-batches", default="1,2,4,8,16,32")
    p.add_argument("--sweep-precisions", default="float16,bfloat16")
    p.add_argument("--vitb-slices", type=int, default=100)
    p.add_argument("--vitb-batch", type=int, default=16)
    p.add_argument("--scratch", default="/tmp", help="where random-weight checkpoints are written")
    p.add_argument("--json", type=Path, help="also write every number to this file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        from MedSAMSegmentLib.model.fast_encoder import tune_threads

        tune_threads()
    if args.rss_child:
        return rss_child(args)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"# MedSAMSegment benchmark: torch {torch.__version__}, {device_name}; load average "
          f"{os.getloadavg()[0]:.1f} at start")
    results = {"device": device_name, "torch": torch.__version__}
    configs = [c for c in args.configs.split(",") if c]
    if not args.skip_components or not args.skip_structures:
        predictors = {c: make_predictor("litemedsam", args.device, c, args.checkpoint) for c in configs}
    if not args.skip_components:
        image, box = component_slice(args.reference)
        print("\n| model | device | encoder | precision | encoder ms/slice | encoder CPU ms/slice (all threads) | "
              "decoder ms/slice | re-prompt ms (cached slice) |")
        print("|---|---|---|---|---|---|---|---|")
        results["components"] = []
        for config, pred in predictors.items():
            enc, cpu, dec, again = component_times(pred, image, box, args.reps)
            kind = "fast" if CONFIGS[config][0] else "reference"
            results["components"].append({"config": config, "encoder_ms": enc, "encoder_cpu_ms": cpu, "decoder_ms": dec,
                                          "reprompt_ms": again})
            print(f"| litemedsam | {args.device} | {kind} | {CONFIGS[config][1]} | {enc:.0f} | {cpu:.0f} | {dec:.1f} | "
                  f"{again:.1f} |", flush=True)
    if not args.skip_structures:
        structures = select_structures(args.reference, args.structures)
        rows = structure_table(args, args.reference, structures, predictors)
        print_structure_table(rows)
        results["structures"] = rows
    if args.rss:
        results["rss"] = rss_table(args)
    if args.sweep:
        checkpoints = {"medsam-vit-b": random_checkpoint("medsam-vit-b", args.scratch), "litemedsam": args.checkpoint}
        results["sweep"] = sweep(args, checkpoints)
        results["vitb_propagation"] = vitb_propagation(args, args.reference, checkpoints["medsam-vit-b"],
                                                       args.vitb_slices)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}; peak RSS of this process {rss_mb():.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
