"""Model work in a worker thread, polled by the front end's event loop.

The model (and its first torch import and weight loading) must not block the GUI thread, and MRML and
Qt must only be touched on the main thread. So a run is split: the front end reads MRML, starts a Job
whose work is pure numpy + torch, keeps its own event loop turning while polling the Job (Slicer: a
`processEvents` loop as `slicer.packaging` runs pip; a web server: its asyncio loop), and writes the
result to MRML on the main thread once the Job is finished.

Cancel is honoured at once from the front end's point of view: `cancel()` marks the job, the front
end stops waiting, and the result is discarded whatever the worker still does. The worker stops at its
next check (between slices); a model load in progress completes in the background and is reused by
the next run.
"""

import atexit
import threading
import time
import weakref

from ..errors import CancelledError

_RUNNING = weakref.WeakSet()  # jobs whose thread may still run


@atexit.register
def _cancelAll():
    """A daemon worker still inside a torch call when the interpreter exits runs on while C++ static
    destructors run, which aborts the process: cancel running jobs and let them reach their next check."""
    jobs = [job for job in list(_RUNNING) if not job.finished]
    for job in jobs:
        job.cancel()
    for job in jobs:
        job.thread.join(timeout=30)


class Job:
    """work(progress, isCancelled) -> result, run in a daemon thread."""

    def __init__(self, work, name="MedSAM worker"):
        self._work = work
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._progress = (0, 0)
        self._whenFinished = []
        self.result = None
        self.error = None
        self.started = None
        self.seconds = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        self.started = time.perf_counter()
        _RUNNING.add(self)
        self.thread.start()
        return self

    def _run(self):
        try:
            self.result = self._work(self._setProgress, self._cancel.is_set)
        except BaseException as exc:  # handed to the main thread, which decides what to show
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - self.started
            with self._lock:
                self._finished.set()
                callbacks, self._whenFinished = self._whenFinished, []
            for callback in callbacks:
                callback()

    def _setProgress(self, done, total):
        with self._lock:
            self._progress = (int(done), int(total))

    @property
    def progress(self):
        """(slices done, slices in total); (0, 0) while the model loads."""
        with self._lock:
            return self._progress

    def cancel(self):
        self._cancel.set()

    @property
    def cancelled(self):
        return self._cancel.is_set() or isinstance(self.error, CancelledError)

    @property
    def finished(self):
        return self._finished.is_set()

    def whenFinished(self, callback):
        """callback() once the work has ended, in the worker thread (at once if it has ended): an event
        loop is woken by it without a thread of its own waiting for the job."""
        with self._lock:
            if not self._finished.is_set():
                self._whenFinished.append(callback)
                return
        callback()

    def wait(self, timeout=None):
        """True once the work has ended. Waiting releases the GIL, so the worker runs meanwhile."""
        return self._finished.wait(timeout)
