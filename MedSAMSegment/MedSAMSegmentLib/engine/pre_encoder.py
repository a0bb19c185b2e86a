"""Background pre-encoding: the slice in view and its neighbours are encoded before a box is drawn.

While the effect is active, each change of the viewed slice calls `request(...)`. One worker
thread encodes that slice, then its neighbours (index+1, index-1, index+2, ...), into the
predictor's embedding cache, under the keys a propagation or a one-slice preview looks up
(embedding_cache.content_key), so a box drawn there only runs the prompt decoder.

It never gets in the way of real work:
- Foreground first. The encode runs one encoder step at a time (Predictor.background_encode) and
  starts no step while a foreground call (Predictor.embeddings / decoding) waits, or ran in the
  last `quiet_s` seconds (the gaps between the slices of a propagation). A box drawn during a
  background encode therefore waits for at most the rest of one step. The slice it handed over
  is kept half-encoded and resumed later, or dropped when no longer wanted; if the foreground
  needs that very slice, it runs the remaining steps itself instead of starting it again.
- Free room only. Embeddings go into the cache only where they fit without evicting anything,
  leaving room for one foreground batch: pre-encoding never pushes out an embedding a propagation
  encoded because it needed it. When the cache is that full, pre-encoding stops.
- Low priority. On Linux the worker thread lowers its own nice value (setpriority on its thread
  id is per thread there); PyTorch's OpenMP pool is per calling thread, and the pool threads the
  worker starts inherit its nice value, so the whole background encode runs at low priority
  (checked with libgomp, the OpenMP runtime of the PyPI CPU wheels; Testing/test_pre_encoder.py
  checks the worker's own nice value).
- Out of the way of a box being drawn: between a press and its release (focus / unfocus) only
  the slice in view (the request's first slice, the one the box will need) is worked on; the
  neighbours wait, so the run the release starts does not wait for a neighbour's step. A run
  pauses the encoder (pause / resume).
- Cancellable: a new request replaces the previous one between two steps; stop() ends the
  worker within one step.
- The model load (the predictor provider's first call) and the window's statistics (a callable
  window) run in the worker thread, never in the caller's.
"""

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass

from ..errors import InputError
from .embedding_cache import content_key
from .slicing import get_slice, num_slices

log = logging.getLogger(__name__)

EMBEDDING_BYTES = 256 * 64 * 64 * 4  # both models' embedding; what a cache entry costs


@dataclass(frozen=True)
class _Wish:
    volume: object  # (K, J, I) raw array
    window: object  # IntensityWindow, or a zero-argument callable returning one
    axis: str
    order: tuple  # slice indices, most wanted first


def neighbour_order(index, count, neighbours):
    """index, index+1, index-1, index+2, index-2, ... within [0, count)."""
    order = [index]
    for d in range(1, neighbours + 1):
        order += [i for i in (index + d, index - d) if 0 <= i < count]
    return tuple(order)


_LIVE = weakref.WeakSet()  # every PreEncoder, stopped at interpreter exit


@atexit.register
def _stop_all():
    """A daemon worker still inside a torch call when the interpreter exits runs on while C++ static
    destructors run, which aborts the process ("terminate called without an active exception")."""
    for encoder in list(_LIVE):
        try:
            encoder.stop(timeout=30)
        except Exception:  # exiting anyway: never let one encoder keep the others running
            pass


class PreEncoder:
    """Encodes the slice in view and its neighbours in a background thread (see the module docstring).

    predictor_provider() returns the Predictor to fill; it is called in the worker thread at the
    start of each request's work (so a settings change reaches the next request), and may be slow
    the first time (model load).
    """

    def __init__(self, predictor_provider, quiet_s=0.25, nice=10):
        self._provider = predictor_provider
        self.quiet_s = quiet_s  # foreground silence needed before a background step starts
        self.nice = nice
        self._cond = threading.Condition()
        self._wish = None
        self._paused = False
        self._focused = False  # a box is being drawn: only the request's first slice is worked on
        self._neighbours_at = 0.0  # time.monotonic() before which the neighbours still wait
        self._thread = None
        self._stop = None  # threading.Event of the running worker
        _LIVE.add(self)
        self._uninterruptible = set()  # stop events of workers loading the model or computing a window
        self._partial = None  # (key, BackgroundEncode) of a slice handed over part-way
        # Counters (read them for tests and benchmarks):
        self.encoded = 0  # slices encoded and stored in the cache
        self.skipped = 0  # wished slices that were already in the cache
        self.steps_run = 0  # encoder steps run
        self.handovers = 0  # times a step waited because a foreground call came first
        self.abandoned = 0  # part-encoded slices thrown away (no longer wanted, encoded by someone else, stop)
        self.adopted = 0  # part-encoded slices a foreground call needed and finished itself
        self.cache_full = 0  # requests cut short because the cache had no free room
        self.errors = 0
        self.last_error = None
        self.after_step = None  # tests: after_step(name) runs after each step, while the step holds the model

    # -- the caller's side (GUI thread): nothing here blocks ------------------------------------
    def request(self, volume_kji, window, axis, index, neighbours=2):
        """Encode slice `index` along `axis`, then index+1, index-1, ... index±neighbours.

        Replaces the previous request (the work in progress stops between two encoder steps).
        `window`: an IntensityWindow, or a zero-argument callable returning one (called in the
        worker thread: statistics of a large volume take a while). Returns at once."""
        if getattr(volume_kji, "ndim", None) != 3:
            raise InputError(f"expected a 3D volume (K, J, I), got {getattr(volume_kji, 'shape', type(volume_kji))}")
        if axis not in ("i", "j", "k"):
            raise InputError(f"unknown axis {axis!r}; expected i, j or k")
        count = num_slices(volume_kji.shape, axis)
        if not 0 <= int(index) < count:
            raise InputError(f"slice {index} is outside the volume along {axis} (0 to {count - 1})")
        if int(neighbours) < 0:
            raise InputError(f"neighbours must be 0 or more, got {neighbours}")
        wish = _Wish(volume_kji, window, axis, neighbour_order(int(index), count, int(neighbours)))
        with self._cond:
            self._wish = wish
            if self._thread is None or not self._thread.is_alive() or self._stop.is_set():
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._work, args=(self._stop,), daemon=True,
                                                name="MedSAM pre-encoder")
                self._thread.start()
            self._cond.notify_all()

    def pause(self):
        """Stop starting encoder steps until resume() (the slice in progress is kept)."""
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self):
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def focus(self):
        """A box is being drawn: work on the slice in view only (the request's first slice; the
        step in progress ends first) until unfocus()."""
        with self._cond:
            self._focused = True
            self._cond.notify_all()

    def unfocus(self, after_s=0.0):
        """The box is drawn: the neighbours may be worked on again, `after_s` seconds from now
        (time for the run the release starts to take the model first)."""
        with self._cond:
            self._focused = False
            self._neighbours_at = time.monotonic() + after_s
            self._cond.notify_all()

    def stop(self, timeout=None):
        """Cancel all work and end the worker; True once it has ended (within one encoder step).

        A model load or a window's statistics in progress cannot be interrupted: then stop() does
        not wait for them and returns False (the worker ends by itself when they return, doing
        nothing more)."""
        with self._cond:
            thread, stop = self._thread, self._stop
            self._wish = None
            if stop is not None:
                stop.set()
            self._cond.notify_all()
            uninterruptible = stop in self._uninterruptible
        if thread is None or uninterruptible:
            return thread is None or not thread.is_alive()
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def busy(self):
        """True while a request has work left (and the encoder is not paused)."""
        with self._cond:
            return self._wish is not None and not self._paused

    def wait_idle(self, timeout=None):
        """Block until the current request is done (or cut short); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._wish is None or self._paused, timeout)

    # -- the worker thread ----------------------------------------------------------------------
    def _lower_priority(self):
        # Linux only: there setpriority on a thread id changes that thread alone. Elsewhere the same
        # call would name a process, so it is not made; the hand-over keeps the latency anyway.
        if self.nice and sys.platform.startswith("linux"):
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
            except OSError as exc:
                log.info("pre-encoder keeps normal priority: %s", exc)

    def _work(self, stop):
        self._lower_priority()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: stop.is_set() or (self._wish is not None and not self._paused))
                if stop.is_set():
                    break
                wish = self._wish
            try:
                self._fulfil(wish, stop)
            except Exception as exc:  # speculative work: a failure must never reach the user
                self.errors += 1
                self.last_error = exc
                log.warning("background pre-encoding failed: %s", exc)
            with self._cond:
                if self._wish is wish:
                    self._wish = None
                self._cond.notify_all()
        with self._cond:
            if self._stop is stop:  # not a worker stopped during a load, with a successor running
                self._drop_partial()
            self._cond.notify_all()

    def _current(self, wish, stop, first=True):
        """Wait while paused (or, for a neighbour, focused); True while `wish` is still the one to
        work on. first: the work is on the request's first slice."""
        with self._cond:
            while not stop.is_set() and self._wish is wish:
                wait = 0.0 if first else self._neighbours_at - time.monotonic()
                if self._paused or (not first and self._focused):
                    self._cond.wait()
                elif wait > 0:
                    self._cond.wait(wait)
                else:
                    return True
            return False

    def _uninterruptibly(self, function, stop):
        with self._cond:
            self._uninterruptible.add(stop)
        try:
            return function()
        finally:
            with self._cond:
                self._uninterruptible.discard(stop)

    def _fulfil(self, wish, stop):
        predictor = self._uninterruptibly(self._provider, stop)
        if not self._current(wish, stop):
            return
        window = self._uninterruptibly(wish.window, stop) if callable(wish.window) else wish.window
        if not self._current(wish, stop):
            return
        slices = []
        for index in wish.order:
            image = window.apply(get_slice(wish.volume, wish.axis, index))
            slices.append((content_key(predictor.spec, image), image))
        if self._partial is not None and self._partial[0] not in {key for key, _ in slices}:
            self._drop_partial()
        for position, (key, image) in enumerate(slices):
            first = position == 0
            if not self._current(wish, stop, first):
                return
            if key in predictor.cache:
                self.skipped += 1
                continue
            if not self._encode(predictor, key, image, wish, stop, first):
                return

    def _encode(self, predictor, key, image, wish, stop, first=True):
        """Encode one slice step by step into the cache; False when the request's work must end."""
        reserve = predictor.batch_size * EMBEDDING_BYTES  # room for one foreground batch
        if predictor.cache.free_bytes() < EMBEDDING_BYTES + reserve:
            self.cache_full += 1
            return False
        if self._partial is not None and self._partial[0] == key and self._partial[1].predictor is predictor:
            run = self._partial[1]
        else:
            self._drop_partial()
            run = predictor.background_encode(image, key)
        self._partial = (key, run)

        def cancelled():
            return stop.is_set() or self._wish is not wish

        while not run.done and key not in predictor.cache:
            if predictor.foreground_busy:
                self.handovers += 1  # a foreground call came during the last step: it goes first
            if not self._current(wish, stop, first) or not predictor.wait_for_quiet(self.quiet_s, cancelled):
                return False  # the half-done slice stays in self._partial for the next request
            if run.generation != predictor.encoder_generation:  # the predictor fell back to the CPU
                self._drop_partial()
                return False
            if run.step(self.quiet_s, self.after_step) is None:
                self.handovers += 1
            else:
                self.steps_run += 1
        self._partial = None
        run.close()
        if key in predictor.cache:  # a foreground call needed it first: it finished this encode, or made its own
            if run.done:
                self.adopted += 1
            else:
                self.abandoned += 1
            return True
        if not predictor.cache.put_if_room(key, run.result(), reserve):
            self.cache_full += 1
            return False
        self.encoded += 1
        return True

    def _drop_partial(self):
        if self._partial is not None:
            self._partial[1].close()
            self._partial = None
            self.abandoned += 1
