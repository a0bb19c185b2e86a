"""Run image tasks on Dask: a LocalCluster started here, or an existing scheduler (tcp://...).

One Dask task per image (its rows share one image read and one embedding cache). The function
runs on the worker and loads each model once per worker process (worker_state's per-process
cache). A worker lost mid-task is the scheduler's to handle: it re-runs that task elsewhere;
nothing partial was written, because outputs appear only by an atomic rename. Workers read the
images and write outputs by path: all of them must see the same files (shared storage).
"""

import uuid

from ..errors import DependencyError, InputError
from . import worker_state
from .image_task import result_line, run_image_task


def _distributed():
    try:
        import distributed
    except ImportError:
        raise DependencyError(
            "--dask-local and --scheduler need Dask: pip install 'medsam-segment[dask]' (dask, distributed)"
        ) from None
    return distributed


def _on_worker(task):
    worker_state.set_threads(task.options.threads)
    return run_image_task(task)


def run_on_dask(tasks, on_lines, scheduler=None, local_workers=None, threads=None, retries=2):
    distributed = _distributed()
    cluster = None
    if scheduler:
        try:
            client = distributed.Client(scheduler)
        except (OSError, ValueError) as exc:  # nothing listens there (after Dask's connect timeout), a bad address
            raise InputError(f"cannot use the Dask scheduler {scheduler}: {' '.join(str(exc).split())}") from None
    else:
        cluster = distributed.LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
    lines = []
    try:
        submitted, batch = {}, uuid.uuid4().hex[:8]
        for number, task in enumerate(tasks):
            if threads:
                task.options = worker_state.EngineOptions(**{**task.options.__dict__, "threads": threads})
            future = client.submit(_on_worker, task, pure=False, retries=retries, key=f"medsam-image-{batch}-{number}")
            submitted[future] = task
        for future in distributed.as_completed(submitted):
            task = submitted[future]
            try:
                done = future.result()
            except Exception as exc:  # noqa: BLE001 - the task failed even after retries
                reason = f"Dask task failed: {type(exc).__name__}: {exc}"
                done = [result_line(row, "failed", reason) for row in task.rows]
            on_lines(done)
            lines += done
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return lines
