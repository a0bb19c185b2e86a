"""One task = one image and the rows to compute on it: one image read, one predictor (and so one
embedding cache) for all of them, a figure line per row. Runs in-process, in a local worker
process or on a Dask worker: everything it needs travels in the (picklable) ImageTask.

A row that fails (bad box, malformed ROI, a box outside the image) fails alone with its one-line
reason; an image that cannot be read fails its rows. Nothing partial is ever written: outputs go
through imageio's atomic writes and the ledger's pending/done records.
"""

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import CancelledError, MedSAMError
from . import ledger, worker_state


@dataclass
class ImageTask:
    image: str
    rows: list  # manifest.Row, all on `image`, to compute
    fingerprints: dict  # row number -> fingerprint
    replace: dict  # row number -> may replace an existing output (a changed row, --overwrite)
    output_dir: str
    options: worker_state.EngineOptions
    group_output: str = None  # --group-by-image: one .seg.nrrd for all rows
    group_fingerprint: str = None
    group_replace: bool = False
    slices: dict = field(default_factory=dict)  # row number -> slices it may take (progress totals)


def result_line(row, status, reason="", **figures):
    line = {"row": row.number, "name": row.name, "image": row.image, "status": status, "reason": reason,
            "output": row.output, "voxels": None, "volume_ml": None, "slices": None, "segmented": None,
            "stop_reasons": "", "seconds": None, "dice": None}
    line.update(figures)
    return line


def _reason(exc):
    if isinstance(exc, MedSAMError):
        return " ".join(str(exc).split())
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


class _Windows:
    """Intensity windows of one image, computed once per (modality, window) among its rows."""

    def __init__(self, array):
        self.array, self._known = array, {}

    def get(self, row):
        from ..engine.intensity import auto_window

        key = (row.modality, row.window)
        if key not in self._known:
            self._known[key] = auto_window(self.array, modality=row.modality, window=row.window)
        return self._known[key]


def _axis(row, image):
    from ..cli import SUPERIOR_RAS
    from ..engine.geometry import closest_index_axis

    return row.axis or closest_index_axis(image.ijk_to_ras, SUPERIOR_RAS)


def _added_boxes(row, image, axis):
    """The row's added key-slice boxes as the engine takes them, checked as `segment --add-box-ijk`
    checks them (one slice thick, inside the volume); the reason names the box ("add_box_ijk 2 (...)")."""
    if not row.add_boxes:
        return None
    from ..engine.key_boxes import added_boxes_from_index_boxes

    return added_boxes_from_index_boxes(row.add_boxes, image.shape, axis, what="add_box_ijk")


def _figures(mask, image, axis, result, seconds, label_path, label_value):
    from ..engine.geometry import numpy_axis
    from ..engine.metrics import dice

    voxels = int(mask.sum())
    in_plane = tuple(a for a in range(3) if a != numpy_axis(axis))
    figures = {
        "voxels": voxels,
        "volume_ml": round(voxels * abs(float(np.linalg.det(image.ijk_to_ras[:3, :3]))) / 1000.0, 4),
        "slices": int(np.count_nonzero(mask.any(axis=in_plane))),
        "segmented": len(result.slices),
        "stop_reasons": "; ".join(f"{way}: {why}" for way, why in result.stop_reasons.items() if why),
        "seconds": round(seconds, 3),
    }
    if label_path:
        from ..fileio.imageio import read_image

        label = read_image(label_path).array
        if label.shape != mask.shape:
            raise MedSAMError(f"label {label_path} has shape {label.shape}, the image {mask.shape}")
        figures["dice"] = round(dice(mask, label == label_value), 6)
    return figures


def _pre_encode(predictor, image, rows_and_windows, options):
    """On CUDA (or when asked), encode every slice these rows can visit in batches of 32 first:
    a GPU encodes a batch several times faster than slice by slice as propagation asks."""
    wanted = options.pre_encode if options.pre_encode is not None else predictor.device.type == "cuda"
    if not wanted:
        return
    from ..engine.propagation import _SliceSource

    per_slice = 256 * 64 * 64 * 4
    budget = predictor.cache.max_bytes // per_slice // 2  # never evict what this image still needs
    batch = max(predictor.batch_size, 32 if predictor.device.type == "cuda" else predictor.batch_size)
    for (axis, window), ranges in rows_and_windows.items():
        source = _SliceSource(predictor, image.array, window, axis)
        indices = sorted({i for first, last in ranges for i in range(first, last + 1)})[:budget]
        keys = {source.key(i): i for i in indices}
        for start in range(0, len(indices), batch):
            chunk = list(keys)[start : start + batch]
            predictor.embeddings(chunk, lambda key: source.image(keys[key]))
        for i in indices:
            source.forget(i)


def _plan_rows(task, image, windows):
    """(row, axis, box, window, added boxes) or (row, None, error) for each row, before any model work."""
    from ..cli import _index_box

    planned = []
    for row in task.rows:
        try:
            axis = _axis(row, image)
            box = _index_box(row, image, axis)
            planned.append((row, axis, box, windows.get(row), _added_boxes(row, image, axis)))
        except (MedSAMError, ValueError, OSError) as exc:
            planned.append((row, None, _reason(exc)))
    return planned


def run_image_task(task, progress=None, cancel=None):
    """Result lines (dicts) for task.rows. progress(row_number, done, total) after each slice."""
    from ..engine.geometry import slice_range
    from ..fileio.imageio import read_image

    try:
        image = read_image(task.image)
    except (MedSAMError, ValueError, OSError) as exc:
        return [result_line(row, "failed", _reason(exc)) for row in task.rows]
    windows = _Windows(image.array)
    planned = _plan_rows(task, image, windows)
    ranges = {}
    for item in planned:
        if item[1] is not None:
            row, axis, box, window, added = item
            (first, last), keys = slice_range(box, axis), [index for index, _ in added or ()]  # added boxes widen it
            ranges.setdefault((axis, window), []).append((min([first, *keys]), max([last, *keys])))
    lines, done_masks, notices = [], [], []
    for item in planned:
        row = item[0]
        if item[1] is None:
            lines.append(result_line(row, "failed", item[2]))
            continue
        try:
            predictor = worker_state.predictor(row.model, task.options)
            notices = predictor.notices
            if ranges:
                _pre_encode(predictor, image, ranges, task.options)
                ranges = {}
            line, mask = _run_row(task, row, image, item[1:], predictor, progress, cancel)
        except (CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure stays this row's
            line, mask = result_line(row, "failed", _reason(exc)), None
        lines.append(line)
        if mask is not None:
            done_masks.append((row, mask))
    if task.group_output:
        lines = _write_group(task, image, lines, done_masks)
    for line in lines:  # the predictor's notes (--compile ignored, a fall-back to the CPU) travel to the client
        line["notes"] = list(notices)
    return lines


def _run_row(task, row, image, plan, predictor, progress, cancel):
    from ..engine.propagation import segment_volume

    axis, box, window, added = plan
    started = time.perf_counter()
    report = None if progress is None else (lambda done, total: progress(row.number, done, total))
    extra = {"add_boxes": added} if added else {}
    result = segment_volume(predictor, image.array, window, box, axis=axis, key_slice=row.key_slice,
                            mode=row.propagation, progress=report, cancel=cancel, **extra)
    figures = _figures(result.mask, image, axis, result, time.perf_counter() - started, row.label, row.label_value)
    if task.group_output:
        return result_line(row, "done", output=task.group_output, **figures), result.mask
    _write_row(task, row, image, result.mask, predictor, figures)
    return result_line(row, "done", **figures), None


def _tags(predictor, propagation, fingerprint):
    return {"MedSAMSegment.Model": predictor.model_name, "MedSAMSegment.Propagation": propagation,
            "MedSAMSegment.BatchFingerprint": fingerprint}


def _may_replace(task, output, fingerprint, planned):
    """The plan's decision, unless the output appeared after the plan was made: a task retried after its
    worker was killed finds what its first attempt wrote. The ledger then decides, before this attempt
    marks anything: an output of ours (a pending or finished record of this batch) may be replaced, a
    stranger's file may not."""
    if planned or not os.path.lexists(output):
        return planned
    action, detail = ledger.decide(task.output_dir, output, fingerprint, False)
    return action == "skip" or (action == "run" and bool(detail))


def _write_row(task, row, image, mask, predictor, figures):
    from ..cli import write_result
    from ..fileio.imageio import output_kind

    fingerprint = task.fingerprints[row.number]
    os.makedirs(os.path.dirname(row.output), exist_ok=True)
    replace = _may_replace(task, row.output, fingerprint, task.replace.get(row.number, False))
    ledger.mark_pending(task.output_dir, row.output, fingerprint)
    write_result(row.output, output_kind(row.output), mask, image, row.name, row.color,
                 replace, _tags(predictor, row.propagation, fingerprint))
    ledger.mark_done(task.output_dir, row.output, fingerprint, figures)


def _write_group(task, image, lines, done_masks):
    from .segfile import write_segments

    if not done_masks:
        return lines
    segments = [(row.name, row.color, mask) for row, mask in done_masks]
    tags = {"MedSAMSegment.BatchFingerprint": task.group_fingerprint}
    try:
        os.makedirs(os.path.dirname(task.group_output), exist_ok=True)
        replace = _may_replace(task, task.group_output, task.group_fingerprint, task.group_replace)
        ledger.mark_pending(task.output_dir, task.group_output, task.group_fingerprint)
        write_segments(task.group_output, segments, image, tags, overwrite=replace)
        figures = {line["row"]: {k: v for k, v in line.items() if k not in ("status", "reason")} for line in lines}
        ledger.mark_done(task.output_dir, task.group_output, task.group_fingerprint, figures)
    except (MedSAMError, OSError) as exc:
        reason = _reason(exc)
        return [dict(line, status="failed", reason=reason) if line["status"] == "done" else line for line in lines]
    return lines
