"""Cohort speed on the CPU: the 24 reference structures as one `batch` manifest vs 24 separate
`segment` calls, a re-run with nothing changed, and Dask / worker-process runs (prints Markdown).

Every run is a fresh command line process, as a user would start it, so model loading counts.
Masks are compared voxel for voxel (all outputs are .nii.gz labelmaps).

    python benchmarks/batch_cpu.py [--work DIR] [--lib DIR] [--only SUBSTRING] [--skip separate,dask,workers]

--lib: the folder holding MedSAMSegmentLib to run (default: this checkout's); pass a copy to keep
a long run independent of edits made meanwhile. Results: benchmarks/results/batch_cpu.{md,json}.
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results"
CPU = {"seconds": 0.0}  # CPU seconds of the last cli() run


def structures(only):
    summary = json.loads((SHARED / "reference" / "summary.json").read_text())
    wanted = only.split(",")
    return [(name, info) for name, info in summary.items() if any(part in name for part in wanted)]


def write_manifest(path, items):
    cases = SHARED / "data" / "cases"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "box_ijk", "modality", "name", "output", "label", "label_value", "axis"])
        for name, info in items:
            case = name.split("/")[0]
            writer.writerow([cases / case / "image.nii.gz", " ".join(map(str, info["box"])), info["modality"],
                             name.replace("/", "__"), name.replace("/", "__") + ".nii.gz",
                             cases / case / "label.nii.gz", info["label"], "k"])


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli(lib, *args):
    """Run the command line from `lib`; (wall seconds, exit status). The CPU seconds of the run
    (its processes and their children) accumulate in CPU["seconds"]: on a machine shared with
    other jobs they measure the work, which wall time does not."""
    env = dict(os.environ, PYTHONPATH=str(lib))
    started, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run([sys.executable, "-m", "MedSAMSegmentLib.cli", *map(str, args)], cwd=lib, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    CPU["seconds"] = _children_cpu() - cpu
    if done.returncode not in (0, 3):
        print(done.stdout, done.stderr, file=sys.stderr)
    return seconds, done.returncode


def masks_equal(folder_a, folder_b, items):
    import numpy as np
    import SimpleITK as sitk

    same = 0
    for name, _ in items:
        file = name.replace("/", "__") + ".nii.gz"
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(folder_a / file)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(folder_b / file)))
        same += bool(np.array_equal(a, b))
    return same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/medsam-batch-bench")
    parser.add_argument("--lib", default=str(ROOT / "MedSAMSegment"))
    parser.add_argument("--only", default="")
    parser.add_argument("--skip", default="", help="comma-separated: batch (re-use --work's), separate, dask, workers")
    parser.add_argument("--note", default="", help="a line about the machine (e.g. shared with other jobs)")
    parser.add_argument("--results", default="batch_cpu", help="results file name in benchmarks/results")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    items = structures(args.only)
    manifest = work / "cohort.csv"
    write_manifest(manifest, items)
    slices = sum(info["box"][5] - info["box"][2] + 1 for _, info in items)
    results = {"structures": len(items), "box_slices": slices, "note": args.note, "runs": {}}

    def save():
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.results}.json").write_text(json.dumps(results, indent=1))
        (RESULTS / f"{args.results}.md").write_text(table(results))

    def record(key, seconds, status, cpu=None, **more):
        cpu = CPU["seconds"] if cpu is None else cpu
        results["runs"][key] = dict(seconds=round(seconds, 1), cpu_seconds=round(cpu, 1), status=status, **more)
        print(f"{key}: {seconds:.1f} s (exit {status})", file=sys.stderr, flush=True)
        save()

    batch = work / "batch"
    while "batch" in skip and not (batch / "report.csv").exists():  # another run is writing them
        time.sleep(10)
    if "batch" not in skip:  # else: compare with the outputs of an earlier run in the same --work
        seconds, status = cli(args.lib, "batch", manifest, "--output-dir", batch, "--device", "cpu", "--overwrite", "-q")
        record("batch (1 process, 2 threads)", seconds, status)
        seconds, status = cli(args.lib, "batch", manifest, "--output-dir", batch, "--device", "cpu", "-q")
        record("batch re-run, nothing changed", seconds, status)
    if "separate" not in skip:
        separate, total, cpu = work / "separate", 0.0, 0.0
        separate.mkdir(exist_ok=True)
        for name, info in items:
            seconds, status = cli(args.lib, "segment", SHARED / "data" / "cases" / name.split("/")[0] / "image.nii.gz",
                                  "--box-ijk", *info["box"], "--modality", info["modality"], "--axis", "k",
                                  "--device", "cpu", "-o", separate / (name.replace("/", "__") + ".nii.gz"),
                                  "--overwrite", "-q")
            total, cpu = total + seconds, cpu + CPU["seconds"]
            print(f"  segment {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
            results["separate_done"] = {"calls": items.index((name, info)) + 1, "seconds": round(total, 1),
                                        "cpu_seconds": round(cpu, 1)}
            save()
        record(f"{len(items)} separate segment calls (summed)", total, 0, cpu, same_masks_as_batch=masks_equal(batch, separate, items))
    for key, flag, folder in (("dask", "--dask-local", "dask"), ("workers", "--workers", "workers")):
        if key in skip:
            continue
        out = work / folder
        seconds, status = cli(args.lib, "batch", manifest, "--output-dir", out, "--device", "cpu", flag, 2, "--overwrite", "-q")
        record(f"batch {flag} 2 (1 thread each)", seconds, status, same_masks_as_batch=masks_equal(batch, out, items))
    save()
    print(table(results))


def table(results):
    runs = results["runs"]
    batch = runs.get("batch (1 process, 2 threads)", {}).get("seconds")
    lines = [f"# Cohort batch on the CPU ({results['structures']} reference structures, {results['box_slices']} box slices)",
             "", results["note"], "",
             "| run | wall time (s) | vs separate | CPU time (s) | vs separate | masks identical to the batch |",
             "|---|---:|---:|---:|---:|---|"]
    separate = next((r for k, r in runs.items() if "separate" in k), None)
    for key, run in runs.items():
        wall = f"{run['seconds'] / separate['seconds']:.2f}x" if separate else ""
        cpu = f"{run['cpu_seconds'] / separate['cpu_seconds']:.2f}x" if separate else ""
        same = run.get("same_masks_as_batch")
        same = "" if same is None else f"{same}/{results['structures']}"
        lines.append(f"| {key} | {run['seconds']:.1f} | {wall} | {run['cpu_seconds']:.1f} | {cpu} | {same} |")
    if batch and separate:
        lines.append(f"\nbatch / separate: wall {batch / separate['seconds']:.2f}, "
                     f"CPU {runs['batch (1 process, 2 threads)']['cpu_seconds'] / separate['cpu_seconds']:.2f} (goal <= 0.6)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
