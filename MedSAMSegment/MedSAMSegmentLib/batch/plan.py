"""Before any model work: which rows to run, skip (output up to date) or fail, grouped by image.

Runs where the batch is started (it needs to see the files, as the workers do); reads files only
to hash them, never loads a model, so a re-run with nothing to do costs a few hashes.
"""

import os

from ..errors import MedSAMError
from . import ledger
from .fingerprint import combined_fingerprint, row_fingerprint, weights_sha256
from .image_task import ImageTask, _reason, result_line
from .samefile import cohort_inputs


def _weights_hashes(rows, options):
    hashes = {}
    for model in sorted({row.model for row in rows if not row.error}):
        checkpoint = options.checkpoint if model == options.checkpoint_model else None
        try:
            hashes[model] = weights_sha256(model, checkpoint)[1]
        except (MedSAMError, OSError) as exc:
            hashes[model] = exc
    return hashes


def _precheck(row, inputs, hashes, options):
    """(fingerprint, None) or (None, reason) for one row."""
    if row.error:
        return None, row.error
    clash = inputs.which(row.output)
    if clash:
        return None, f"output {row.output} is {clash}: refusing to overwrite an input"
    weights = hashes.get(row.model)
    if isinstance(weights, Exception):
        return None, _reason(weights)
    if not os.path.isfile(row.image):
        return None, f"image file not found: {row.image}"
    if row.roi and not os.path.isfile(row.roi):
        return None, f"ROI file not found: {row.roi}"
    try:
        return row_fingerprint(row, weights, options.precision), None
    except OSError as exc:
        return None, _reason(exc)


def _group_outputs(rows, output_dir):
    """--group-by-image: DIR/<image name>.seg.nrrd per image (a number added if two names clash)."""
    paths, taken = {}, set()
    for row in rows:
        if row.image in paths or not row.image:
            continue
        stem = os.path.basename(row.image)
        for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
            if stem.lower().endswith(ext):
                stem = stem[: -len(ext)]
                break
        path, n = os.path.join(output_dir, f"{stem}.seg.nrrd"), 1
        while os.path.normcase(path) in taken:
            n += 1
            path = os.path.join(output_dir, f"{stem}_{n}.seg.nrrd")
        taken.add(os.path.normcase(path))
        paths[row.image] = path
    return paths


def plan(rows, output_dir, options, overwrite=False, group_by_image=False):
    """(tasks, result lines of rows that need no work)."""
    inputs = cohort_inputs(rows)
    inputs.add(options.checkpoint, "the --checkpoint weights file")
    hashes = _weights_hashes(rows, options)
    lines, by_image = [], {}
    groups = _group_outputs(rows, output_dir) if group_by_image else {}
    for row in rows:
        if groups.get(row.image):
            row = _with_output(row, groups[row.image])
        fingerprint, reason = _precheck(row, inputs, hashes, options)
        if reason:
            lines.append(result_line(row, "failed", reason))
        else:
            by_image.setdefault(row.image, []).append((row, fingerprint))
    tasks = []
    for image, items in by_image.items():
        task = ImageTask(image, [], {}, {}, output_dir, options)
        if group_by_image:
            task.group_output = groups[image]
            task.group_fingerprint = combined_fingerprint([fp for _, fp in items])
            action, detail = ledger.decide(output_dir, task.group_output, task.group_fingerprint, overwrite)
            if action == "skip":
                lines += [_skipped(row, detail.get("figures", {}).get(str(row.number), {})) for row, _ in items]
                continue
            if action == "refuse":
                lines += [result_line(row, "failed", detail) for row, _ in items]
                continue
            task.group_replace = detail
        for row, fingerprint in items:
            if not group_by_image:
                action, detail = ledger.decide(output_dir, row.output, fingerprint, overwrite)
                if action == "skip":
                    lines.append(_skipped(row, detail.get("figures", {})))
                    continue
                if action == "refuse":
                    lines.append(result_line(row, "failed", detail))
                    continue
                task.replace[row.number] = detail
            task.rows.append(row)
            task.fingerprints[row.number] = fingerprint
        if task.rows:
            tasks.append(task)
    return tasks, lines


def _with_output(row, path):
    from dataclasses import replace

    return replace(row, output=path)


def _skipped(row, figures):
    known = {k: v for k, v in figures.items() if k not in ("row", "name", "image", "status", "reason", "output")}
    return result_line(row, "skipped", "up to date", **known)
