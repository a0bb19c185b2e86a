"""report.csv and report.json in the output folder (written atomically), and the summary line."""

import contextlib
import csv
import json
import os

COLUMNS = ("row", "name", "image", "status", "reason", "output", "voxels", "volume_ml", "slices",
           "segmented", "stop_reasons", "seconds", "dice")


def _atomic_text(path, write):
    temp = f"{path}.{os.getpid()}.part"
    try:
        with open(temp, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def write_report(output_dir, lines, summary):
    lines = sorted(lines, key=lambda line: line["row"])

    def as_csv(f):
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for line in lines:
            writer.writerow({k: "" if line.get(k) is None else line[k] for k in COLUMNS})

    _atomic_text(os.path.join(output_dir, "report.csv"), as_csv)
    document = {"summary": summary, "rows": [{k: line.get(k) for k in COLUMNS} for line in lines]}
    _atomic_text(os.path.join(output_dir, "report.json"), lambda f: json.dump(document, f, indent=1))


def summarise(lines, seconds, interrupted=False, notes=()):
    statuses = [line["status"] for line in lines]
    counts = {status: statuses.count(status) for status in ("done", "skipped", "failed", "not run")}
    counts["rows"] = len(lines)
    counts["seconds"] = round(seconds, 2)
    counts["interrupted"] = interrupted
    counts["notes"] = list(notes)
    return counts


def summary_line(summary, output_dir):
    parts = [f"{summary['done']} done", f"{summary['skipped']} up to date", f"{summary['failed']} failed"]
    if summary["not run"]:
        parts.append(f"{summary['not run']} not run (interrupted)")
    return (f"{summary['rows']} rows: {', '.join(parts)}; {summary['seconds']:.1f} s; "
            f"report: {os.path.join(output_dir, 'report.csv')}")
