"""Which outputs this batch wrote, and from what: one small JSON record per output.

Records live in DIR/.medsam-batch/, one per output path, so workers on other machines write them
without sharing a lock. Each record holds the output's fingerprint, the sha256 of the file as
written (so a file changed or replaced by someone else is not taken for ours) and the row's
figures for the report. NIfTI has no header field ITK would write, which is why the record is
kept beside the output rather than in it (a .seg.nrrd also carries the fingerprint as a tag).

Order of a write: record "pending" -> output (atomic) -> record "done" with the output's hash.
Killed anywhere in between, the next run finds either no output, or an output with a pending
record of ours: both mean "do this row again", never "someone else's file".
"""

import contextlib
import hashlib
import json
import os

from .fingerprint import file_sha256

FOLDER = ".medsam-batch"


def record_path(output_dir, output):
    name = hashlib.sha256(os.path.normcase(os.path.abspath(output)).encode()).hexdigest()[:32]
    return os.path.join(output_dir, FOLDER, name + ".json")


def read_record(output_dir, output):
    try:
        with open(record_path(output_dir, output), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("output") == os.path.abspath(output) else None


def write_record(output_dir, output, record):
    """Replace the record atomically (temporary file + rename)."""
    path = record_path(output_dir, output)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = f"{path}.{os.getpid()}.part"
    try:
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(dict(record, output=os.path.abspath(output)), f, indent=1)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def mark_pending(output_dir, output, fingerprint):
    write_record(output_dir, output, {"state": "pending", "fingerprint": fingerprint})


def mark_done(output_dir, output, fingerprint, figures):
    write_record(output_dir, output, {"state": "done", "fingerprint": fingerprint,
                                      "output_sha256": file_sha256(output), "figures": figures})


def decide(output_dir, output, fingerprint, overwrite):
    """('run', replace?) , ('skip', record) or ('refuse', reason) for one output path."""
    if not os.path.lexists(output):
        return "run", False
    if overwrite:
        return "run", True
    record = read_record(output_dir, output)
    if record is None:
        return "refuse", f"output {output} exists and was not written by this batch (pass --overwrite to replace it)"
    if record.get("state") == "pending":
        return "run", True  # a run was stopped between writing the output and its record
    try:
        ours = os.path.isfile(output) and record.get("output_sha256") == file_sha256(output)
    except OSError:
        ours = False
    if not ours:
        return "refuse", f"output {output} was changed since this batch wrote it (pass --overwrite to replace it)"
    if record.get("fingerprint") == fingerprint:
        return "skip", record
    return "run", True  # the row, its image, ROI or the model changed: redo it
