"""`run_batch(manifest, output_dir, ...)`: the batch command as a function, for scripts and notebooks.

Order: read and check the manifest (ManifestError before any model work) -> plan (hashes, resume,
refusals) -> run the image tasks here, in worker processes or on Dask -> report. SIGTERM or
Ctrl-C stops between slices; finished rows stay, nothing partial is left, the report says which
rows did not run, and a re-run resumes.
"""

import contextlib
import glob
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from ..errors import InputError
from .manifest import load_manifest
from .plan import plan
from .progress import BatchProgress
from .report import summarise, summary_line, write_report
from .worker_state import EngineOptions

EXIT_OK, EXIT_USAGE, EXIT_ROWS_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130


@dataclass
class BatchResult:
    rows: list  # one dict per manifest row (the report's columns)
    summary: dict
    exit_status: int
    output_dir: str
    messages: list = field(default_factory=list)  # the workers' notes, e.g. "--compile is ignored on the CPU"

    @property
    def failed(self):
        return [row for row in self.rows if row["status"] == "failed"]


@contextlib.contextmanager
def _sigterm_stops():
    """SIGTERM (a scheduler ending the job) unwinds like Ctrl-C; only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_stale_temporaries(outputs):
    """Temporary files of outputs whose writer was killed (e.g. a lost Dask worker)."""
    for output in outputs:
        folder, base = os.path.split(output)
        for temp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}.*.part*")):
            with contextlib.suppress(OSError):
                os.unlink(temp)


def run_batch(manifest, output_dir, *, workers=1, dask_local=None, scheduler=None, overwrite=False,
              group_by_image=False, model="litemedsam", checkpoint=None, device="auto", precision="auto",
              cache_mb=2048, pre_encode=None, compile=False, threads=None, progress=False, say=None):
    """Segment every row of `manifest` into `output_dir`; returns a BatchResult (never raises for a row).

    workers: local worker processes (1: in this process); dask_local: start a LocalCluster of that
    many processes; scheduler: address of an existing Dask scheduler. pre_encode: encode each
    image's slices in batches before propagating (None: on CUDA); compile: torch.compile the
    encoder (worth it for a cohort on a GPU). ManifestError (an InputError) when the manifest
    cannot be used.
    """
    say = say or (lambda text: None)
    started = time.perf_counter()
    output_dir = os.path.abspath(os.fspath(output_dir))
    rows = load_manifest(manifest, output_dir, default_model=model)
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {output_dir}: {exc.strerror or exc}") from None
    if sum(bool(x) for x in (workers and workers > 1, dask_local, scheduler)) > 1:
        raise InputError("choose one of --workers, --dask-local and --scheduler")
    options = EngineOptions(device=device, precision=precision, checkpoint=checkpoint, checkpoint_model=model,
                            cache_mb=cache_mb, threads=threads, pre_encode=pre_encode, compile=compile)
    tasks, lines = plan(rows, output_dir, options, overwrite, group_by_image)
    bar = BatchProgress(len(rows)) if progress else None
    if bar:
        bar.rows_finished(line["row"] for line in lines)

    def on_lines(done):
        lines.extend(done)
        if bar:
            bar.rows_finished(line["row"] for line in done)

    on_progress = bar.slice_done if bar else (lambda row, done, total: None)
    interrupted = False
    with _sigterm_stops():
        try:
            _run(tasks, workers, dask_local, scheduler, on_progress, on_lines, threads)
        except KeyboardInterrupt:
            interrupted = True
    finished = {line["row"] for line in lines}
    lines += [_unfinished(task, row) for task in tasks for row in task.rows if row.number not in finished]
    _remove_stale_temporaries({row.output for task in tasks for row in task.rows} |
                              {task.group_output for task in tasks if task.group_output})
    notes = sorted({note for line in lines for note in line.get("notes") or ()})
    summary = summarise(lines, time.perf_counter() - started, interrupted, notes)
    write_report(output_dir, lines, summary)
    for note in notes:
        say(f"note: {note}")
    say(summary_line(summary, output_dir))
    status = EXIT_INTERRUPTED if interrupted else EXIT_ROWS_FAILED if summary["failed"] else EXIT_OK
    return BatchResult(sorted(lines, key=lambda line: line["row"]), summary, status, output_dir, notes)


def _unfinished(task, row):
    """After an interruption: a row whose output was written and recorded counts as done (its
    image's other rows were still running), any other as not run."""
    from . import ledger
    from .image_task import result_line

    record = {} if task.group_output else ledger.read_record(task.output_dir, row.output) or {}
    if record.get("state") == "done" and record.get("fingerprint") == task.fingerprints.get(row.number):
        return result_line(row, "done", **record.get("figures", {}))
    return result_line(row, "not run", "interrupted")


def _run(tasks, workers, dask_local, scheduler, on_progress, on_lines, threads):
    if not tasks:
        return
    if dask_local or scheduler:
        from .dask_runner import run_on_dask
        from .local_pool import available_cores

        share = threads or (max(1, available_cores() // dask_local) if dask_local else None)
        run_on_dask(tasks, on_lines, scheduler=scheduler, local_workers=dask_local, threads=share)
    elif workers and workers > 1 and len(tasks) > 1:
        from .local_pool import run_in_processes

        run_in_processes(tasks, min(workers, len(tasks)), on_progress, on_lines)
    else:
        from .local_pool import run_here

        run_here(tasks, on_progress, on_lines)
