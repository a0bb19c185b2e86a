"""Run image tasks here (one process) or in N local worker processes.

Worker processes are started with 'spawn' (no copy of a parent's threads or torch state), split
the CPU threads between them, load each model once (worker_state) and send per-slice progress
back through a queue. SIGTERM in a worker unwinds like Ctrl-C, so atomic writes clean up. A
worker that dies takes only its task with it: the pool is rebuilt and unfinished tasks are tried
once more.
"""

import concurrent.futures as futures
import multiprocessing
import os
import queue as queue_module
import signal

from . import worker_state
from .image_task import result_line, run_image_task

_QUEUE = None


def run_here(tasks, on_progress, on_lines, cancel=None):
    import torch

    lines, threads = [], torch.get_num_threads()
    try:
        for task in tasks:
            worker_state.set_threads(task.options.threads)
            done = run_image_task(task, on_progress, cancel)
            on_lines(done)
            lines += done
    finally:
        torch.set_num_threads(threads)  # a caller's process keeps its own setting
    return lines


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_init(queue, threads):
    global _QUEUE
    _QUEUE = queue
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    worker_state.set_threads(threads)


def _worker_run(task):
    def progress(row, done, total):
        _QUEUE.put((row, done, total))

    return run_image_task(task, progress)


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_in_processes(tasks, workers, on_progress, on_lines):
    context = multiprocessing.get_context("spawn")
    queue = context.Manager().Queue()
    threads = max(1, available_cores() // workers)
    pending, lines, attempts = list(tasks), [], {}
    while pending:
        with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                         initargs=(queue, threads)) as pool:
            running = {pool.submit(_worker_run, task): task for task in pending}
            pending = []
            try:
                while running:
                    finished, _ = futures.wait(running, timeout=0.2, return_when=futures.FIRST_COMPLETED)
                    _drain(queue, on_progress)
                    for future in finished:
                        task = running.pop(future)
                        try:
                            done = future.result()
                        except futures.process.BrokenProcessPool:
                            attempts[id(task)] = attempts.get(id(task), 0) + 1
                            if attempts[id(task)] < 2:
                                pending.append(task)
                                continue
                            done = [result_line(row, "failed", "its worker process died twice") for row in task.rows]
                        on_lines(done)
                        lines += done
            except BaseException:
                for process in list(getattr(pool, "_processes", {}).values()):
                    if process.is_alive():
                        os.kill(process.pid, signal.SIGTERM)
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            _drain(queue, on_progress)
    return lines


def _drain(queue, on_progress):
    while True:
        try:
            row, done, total = queue.get_nowait()
        except (queue_module.Empty, OSError, EOFError):
            return
        on_progress(row, done, total)
