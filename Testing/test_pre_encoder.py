"""Background pre-encoding (pre_encoder.py) with the real LiteMedSAM: the staged encode gives the
one-shot numbers, its slices are cache hits for previews and propagations, a foreground call
waits for at most one encoder step, stop() is prompt, and the cache's bound is respected.

Timing is checked with event logs and counters, never with wall-clock limits (benchmarks/pre_encoding.py
measures the latencies)."""

import os
import sys
import threading

import numpy as np
import pytest

from engine_support import load_case

torch = pytest.importorskip("torch")

CASE = "mr_abdomen_totalseg"  # 20 small slices: every encode costs the same 256 x 256 input anyway
WAIT_S = 120  # generous limits on waits that should end at once: a hang fails instead of blocking CI


@pytest.fixture(scope="module")
def predictor():
    """A fresh predictor of its own: the tests look at its cache and its foreground encode count."""
    from MedSAMSegmentLib.engine.predictor import Predictor

    return Predictor(model="litemedsam", device="cpu", precision="float32", cache_mb=256)


@pytest.fixture
def fresh(predictor):
    predictor.clear_cache()
    predictor.cache.max_bytes = 256 * 2**20
    yield predictor
    predictor.clear_cache()


@pytest.fixture(scope="module")
def volume(cases_dir):
    return load_case(CASE)[0]


@pytest.fixture(scope="module")
def window(volume):
    from MedSAMSegmentLib.engine.intensity import mr_percentile_window

    return mr_percentile_window(volume)


@pytest.fixture
def pre_encoder(fresh):
    from MedSAMSegmentLib.engine.pre_encoder import PreEncoder

    made = []

    def make(**options):
        made.append(PreEncoder(lambda: fresh, **options))
        return made[-1]

    yield make
    for one in made:
        assert one.stop(timeout=WAIT_S)


def _key(predictor, volume, window, index):
    from MedSAMSegmentLib.engine.embedding_cache import content_key

    return content_key(predictor.spec, window.apply(volume[index]))


def _wait_until(condition):
    for _ in range(WAIT_S * 100):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("timed out")


def _slice_tensor(predictor, volume, window, index):
    return torch.from_numpy(predictor.transform.image_tensor(window.apply(volume[index]))[None])


# -- the staged forward -------------------------------------------------------------------------
def test_staged_encodes_interleaved_step_by_step_equal_the_one_shot_forward_bit_for_bit(fresh, volume, window):
    """Two slices encoded step by step, alternating, with the fast encoder: each equals forward()."""
    a, b = (fresh.background_encode(window.apply(volume[i])) for i in (8, 12))
    while not (a.done and b.done):
        for run in (a, b):
            if not run.done:
                assert run.step() is not None
    assert len(a.steps) > 10  # patch embedding, each block and patch merging, the neck
    with torch.inference_mode():
        for run, index in ((a, 8), (b, 12)):
            assert torch.equal(run.result(), fresh._encoder(_slice_tensor(fresh, volume, window, index))[0])


def test_reference_tinyvit_steps_compose_to_its_forward():
    """The unoptimised TinyViT (Predictor(optimise=False)), shrunk to a 32-pixel input with random
    weights (the full one takes seconds per slice): its steps are its forward."""
    from MedSAMSegmentLib.model.fast_encoder import encoder_steps, run_steps
    from MedSAMSegmentLib.model.tinyvit import TinyViT

    torch.manual_seed(0)
    encoder = TinyViT(img_size=32, embed_dims=(8, 16, 20, 40), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                      window_sizes=(2, 2, 4, 2), out_chans=8).eval()
    x = torch.rand(1, 3, 32, 32)
    steps = encoder_steps(encoder)
    assert [name for name, _ in steps][:3] == ["patch embedding", "layer 0 block 0", "layer 0 merge"]
    with torch.inference_mode():
        assert torch.equal(run_steps(steps, x), encoder(x))


def test_vit_b_structure_and_autocast_steps_compose_to_their_forward():
    """MedSAM ViT-B's encoder class (segment_anything's ImageEncoderViT), shrunk to two blocks on a
    64-pixel input with random weights: its steps are its forward, also under autocast."""
    from MedSAMSegmentLib.model.fast_encoder import encoder_steps, make_encoder, run_steps
    from MedSAMSegmentLib.model.sam_modules import sam_modeling

    torch.manual_seed(0)
    vit = sam_modeling().ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2,
                                         out_chans=16, window_size=2, global_attn_indexes=(1,)).eval()
    x = torch.rand(1, 3, 64, 64)
    steps = encoder_steps(vit)
    assert [name for name, _ in steps] == ["patch embedding", "block 0", "block 1", "neck"]
    with torch.inference_mode():
        assert torch.equal(run_steps(steps, x), vit(x))
        bf16 = make_encoder(vit, torch.device("cpu"), torch.bfloat16)
        assert torch.equal(run_steps(encoder_steps(bf16), x), bf16(x))


# -- what the pre-encoder stores is what previews and propagations look up --------------------------
def test_pre_encoded_slices_are_cache_hits_for_preview_and_propagation(fresh, pre_encoder, volume, window):
    from MedSAMSegmentLib.engine.propagation import segment_slice, segment_volume

    pre = pre_encoder()
    seen = []
    pre.request(volume, lambda: seen.append(threading.get_ident()) or window, "k", 10, neighbours=1)
    assert pre.wait_idle(WAIT_S)
    assert (pre.encoded, pre.skipped, pre.errors) == (3, 0, 0), pre.last_error
    assert seen == [pre._thread.ident]  # the window's statistics ran in the worker, once
    encoded, hits = fresh.encoded, fresh.cache.hits
    box = (40, 30, 80, 60)
    preview = segment_slice(fresh, volume, window, "k", 10, box)
    result = segment_volume(fresh, volume, window, box[:2] + (9,) + box[2:] + (11,), axis="k", mode="official")
    assert fresh.encoded == encoded  # no foreground encode: all three slices were found
    assert fresh.cache.hits >= hits + 4
    assert sorted(result.slices) == [9, 10, 11]
    # The background embedding is the foreground one, bit for bit, so the preview is too.
    background = fresh.cache.get(_key(fresh, volume, window, 10))
    fresh.clear_cache()
    assert np.array_equal(segment_slice(fresh, volume, window, "k", 10, box), preview)
    assert fresh.encoded == encoded + 1
    assert torch.equal(fresh.cache.get(_key(fresh, volume, window, 10)), background)


def test_a_new_request_replaces_the_previous_one(fresh, pre_encoder, volume, window):
    pre = pre_encoder()
    pre.pause()
    pre.request(volume, window, "k", 3, neighbours=1)
    pre.request(volume, window, "k", 15, neighbours=0)
    assert not pre.busy  # paused
    pre.resume()
    assert pre.wait_idle(WAIT_S)
    assert pre.encoded == 1 and len(fresh.cache) == 1
    assert _key(fresh, volume, window, 15) in fresh.cache


def test_while_a_box_is_drawn_only_the_slice_in_view_is_encoded(fresh, pre_encoder, volume, window):
    """focus() (a press): the request's first slice is encoded, its neighbours wait, so the run the
    release starts finds no neighbour's step holding the model; unfocus() lets them go."""
    pre = pre_encoder()
    pre.focus()
    pre.request(volume, window, "k", 10, neighbours=1)
    _wait_until(lambda: _key(fresh, volume, window, 10) in fresh.cache)
    steps = pre.steps_run
    threading.Event().wait(0.5)  # time for a neighbour's step, which must not start
    assert (pre.steps_run, pre.encoded, len(fresh.cache)) == (steps, 1, 1) and pre.busy
    pre.unfocus(after_s=0.2)
    assert pre.wait_idle(WAIT_S)
    assert pre.encoded == 3 and all(_key(fresh, volume, window, i) in fresh.cache for i in (9, 10, 11))


def test_bad_requests_are_refused_on_the_callers_thread(pre_encoder, volume, window):
    from MedSAMSegmentLib.errors import InputError

    pre = pre_encoder()
    for args in (("x", 3), ("k", 20), ("k", -1)):
        with pytest.raises(InputError):
            pre.request(volume, window, *args)
    with pytest.raises(InputError):
        pre.request(volume[0], window, "k", 0)
    assert pre._thread is None  # nothing was started


# -- hand-over ----------------------------------------------------------------------------------
def test_a_foreground_call_during_a_background_step_runs_right_after_that_step(fresh, pre_encoder, volume, window):
    """The foreground call arrives while step 3 of a background encode holds the model: no further
    background step runs before the foreground's own encode starts. The background then resumes
    its slice where it stopped (no step is run twice) and stores it."""
    from MedSAMSegmentLib.engine.propagation import segment_slice
    from MedSAMSegmentLib.model.fast_encoder import encoder_steps

    pre = pre_encoder()
    log, results = [], []
    foreground = threading.Thread(target=lambda: results.append(
        segment_slice(fresh, volume, window, "k", 5, (40, 30, 80, 60))))

    def after_step(name):
        log.append(("step", name))
        if len(log) == 3:  # in the middle of the background encode: a box is drawn on slice 5
            foreground.start()
            _wait_until(lambda: fresh.foreground_busy)
            log.append(("foreground waits",))

    encode_now = fresh._encode_now

    def logged_encode(images):
        log.append(("foreground encode",))
        return encode_now(images)

    fresh._encode_now = logged_encode
    try:
        pre.after_step = after_step
        pre.request(volume, window, "k", 12, neighbours=0)
        assert pre.wait_idle(WAIT_S)
        foreground.join(WAIT_S)
    finally:
        del fresh._encode_now
    arrived = log.index(("foreground waits",))
    assert log[arrived + 1] == ("foreground encode",), log[arrived - 1 : arrived + 3]
    steps = [entry[1] for entry in log if entry[0] == "step"]
    assert steps == [name for name, _ in encoder_steps(fresh._encoder)]  # each step once, in order
    assert (pre.encoded, pre.abandoned, pre.errors) == (1, 0, 0)
    assert pre.handovers >= 1
    assert results and results[0].any()
    assert _key(fresh, volume, window, 12) in fresh.cache and _key(fresh, volume, window, 5) in fresh.cache


def test_a_foreground_call_for_the_slice_being_pre_encoded_finishes_that_encode(fresh, pre_encoder, volume, window):
    """A box on the very slice the pre-encoder is half-way through: the foreground runs the remaining
    steps (no second encode from the start), and gets the one-shot embedding."""
    from MedSAMSegmentLib.engine.propagation import segment_slice

    pre = pre_encoder()
    foreground = threading.Thread(target=lambda: segment_slice(fresh, volume, window, "k", 12, (40, 30, 80, 60)))

    def after_step(name):
        if pre.steps_run == 1:  # this is the second step
            foreground.start()
            _wait_until(lambda: fresh.foreground_busy)

    encoded, adopted = fresh.encoded, fresh.adopted
    pre.after_step = after_step
    pre.request(volume, window, "k", 12, neighbours=0)
    assert pre.wait_idle(WAIT_S)
    foreground.join(WAIT_S)
    assert (pre.encoded, pre.abandoned, pre.adopted, pre.steps_run) == (0, 0, 1, 2)
    assert (fresh.encoded, fresh.adopted) == (encoded, adopted + 1)
    assert len(fresh.cache) == 1 and not fresh._background
    with torch.inference_mode():
        one_shot = fresh._encoder(_slice_tensor(fresh, volume, window, 12))[0]
    assert torch.equal(fresh.cache.get(_key(fresh, volume, window, 12)), one_shot)


# -- cancelling, priority, the cache bound -----------------------------------------------------
def test_stop_ends_the_worker_within_one_step_and_drops_its_half_encoded_slice(fresh, pre_encoder, volume, window):
    pre = pre_encoder()
    two_steps = threading.Event()
    pre.after_step = lambda name: pre.steps_run >= 1 and two_steps.set()
    pre.request(volume, window, "k", 10, neighbours=2)
    assert two_steps.wait(WAIT_S)
    at_stop = pre.steps_run
    assert pre.busy
    assert pre.stop(timeout=WAIT_S)
    assert not pre._thread.is_alive() and not pre.busy
    assert pre.steps_run - at_stop <= 1
    assert (pre.encoded, pre.abandoned) == (0, 1)
    assert len(fresh.cache) == 0


@pytest.mark.parametrize("slow", ["model load", "window statistics"])
def test_slow_preparations_run_in_the_worker_and_stop_does_not_wait_for_them(slow, predictor, volume, window):
    """The first predictor_provider() call (a model load) and a callable window (statistics of the
    whole volume) run in the worker: request() returns at once, and stop() does not block on them."""
    from MedSAMSegmentLib.engine.pre_encoder import PreEncoder

    started, release, callers = threading.Event(), threading.Event(), []

    def blocking(result):
        callers.append(threading.get_ident())
        started.set()
        release.wait(WAIT_S)
        return result

    if slow == "model load":  # returns no predictor: using it after stop() would count an error
        pre = PreEncoder(lambda: blocking(object()))
        pre.request(volume, window, "k", 10)
    else:
        pre = PreEncoder(lambda: predictor)
        pre.request(volume, lambda: blocking(window), "k", 10)
    assert started.wait(WAIT_S)
    assert callers == [pre._thread.ident] != [threading.get_ident()]
    assert pre.stop() is False  # cannot be interrupted: stop() returns without waiting
    release.set()
    pre._thread.join(WAIT_S)
    assert not pre._thread.is_alive() and (pre.encoded, pre.steps_run, pre.errors) == (0, 0, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_worker_thread_runs_at_low_priority(fresh, pre_encoder, volume, window):
    def nice_of(tid):
        with open(f"/proc/self/task/{tid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[16])

    pre = pre_encoder(nice=7)
    seen = {}

    def after_step(name):
        seen.setdefault("worker", nice_of(threading.get_native_id()))

    pre.after_step = after_step
    pre.request(volume, window, "k", 10, neighbours=0)
    assert pre.wait_idle(WAIT_S)
    assert seen["worker"] == os.getpriority(os.PRIO_PROCESS, 0) + 7
    assert nice_of(threading.get_native_id()) == os.getpriority(os.PRIO_PROCESS, 0)  # the caller's is untouched


def test_pre_encoding_only_fills_free_room_and_never_evicts(fresh, pre_encoder, volume, window):
    """A cache of 4 embeddings holding one a propagation encoded: the pre-encoder leaves room for
    one foreground batch (1 on the CPU), so it adds 2 and stops; the first stays."""
    from MedSAMSegmentLib.engine.pre_encoder import EMBEDDING_BYTES
    from MedSAMSegmentLib.engine.propagation import segment_slice

    fresh.cache.max_bytes = 4 * EMBEDDING_BYTES
    segment_slice(fresh, volume, window, "k", 2, (40, 30, 80, 60))
    needed = _key(fresh, volume, window, 2)
    pre = pre_encoder()
    pre.request(volume, window, "k", 10, neighbours=2)
    assert pre.wait_idle(WAIT_S)
    assert (pre.encoded, pre.cache_full) == (2, 1)
    assert needed in fresh.cache and len(fresh.cache) == 3
    assert fresh.cache.nbytes <= fresh.cache.max_bytes - fresh.batch_size * EMBEDDING_BYTES
    assert all(_key(fresh, volume, window, i) in fresh.cache for i in (10, 11))


def test_a_process_that_exits_while_pre_encoding_exits_cleanly(tmp_path):
    """A daemon worker still inside torch while the interpreter exits ran on during C++ static
    destructors and aborted the process ("terminate called without an active exception", exit 134:
    it ended a whole test run once). The pre-encoders are stopped at exit."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    script = tmp_path / "exit_while_encoding.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(REPO_ROOT / 'MedSAMSegment')!r})\n"
        "import numpy as np\n"
        "from MedSAMSegmentLib.engine.predictor import Predictor\n"
        "from MedSAMSegmentLib.engine.pre_encoder import PreEncoder\n"
        "from MedSAMSegmentLib.engine.intensity import auto_window\n"
        "predictor = Predictor(model='litemedsam', device='cpu', precision='float32')\n"
        "volume = (np.random.default_rng(0).random((12, 128, 128)) * 1000).astype(np.int16)\n"
        "encoder = PreEncoder(lambda: predictor, quiet_s=0.0)\n"
        "encoder.request(volume, auto_window(volume, modality='MR'), 'k', 6, neighbours=5)\n"
        "while not encoder.steps_run:\n"
        "    time.sleep(0.05)\n"
        "print('exiting while encoding', flush=True)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exiting while encoding" in result.stdout
