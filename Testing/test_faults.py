"""Runtime faults: memory running out while encoding, PyTorch missing, Ctrl-C in mid-propagation.

Faults are injected at a boundary, never by replacing the code under test: the predictor's
encoder callable is wrapped so it raises the error PyTorch raises when memory runs out, `import
torch` is blocked by a meta-path finder in a child process, and a real SIGINT is delivered to a
child running the CLI. Each test checks the error type, its message and that nothing was written.
"""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cli_support import call
from engine_support import load_case, shared_predictor
from MedSAMSegmentLib.demo import SAMPLE_IMAGE
from MedSAMSegmentLib.engine.embedding_cache import EmbeddingCache
from MedSAMSegmentLib.engine.intensity import auto_window
from MedSAMSegmentLib.engine.propagation import segment_volume
from MedSAMSegmentLib.errors import MedSAMError

torch = pytest.importorskip("torch")

LIB_DIR = Path(__file__).resolve().parent.parent / "MedSAMSegment"  # the code under test, in child processes
BRAIN = "mr_brain1_tumor"
BRAIN_BOX = (189, 144, 13, 208, 160, 15)  # three slices through the tumour (official order 14, 15, 13)
SAMPLE_BOX = ("189", "95", "13", "208", "111", "15")  # the same lesion in the bundled (j-flipped) sample
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"


def child_env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(LIB_DIR), os.environ.get("PYTHONPATH", "")]))


def run_child(code, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=child_env(),
        timeout=timeout,
    )


def assert_one_line_error(err):
    assert err.startswith("medsam-segment: error: ") and err.count("\n") == 1, err


# -- memory runs out while encoding -----------------------------------------------------------


class EncoderFault:
    """Wraps a predictor's encoder callable: raises `error()` for batches of more than `above`
    slices (above=0: every batch), else runs the real encoder. Restores everything on exit."""

    def __init__(self, predictor, error, above):
        self.p, self.error, self.above = predictor, error, above
        self.batches = []  # size of every batch the encoder was called with, in order

    def __call__(self, batch):
        self.batches.append(int(batch.shape[0]))
        if batch.shape[0] > self.above:
            raise self.error()
        return self.real(batch)

    def __enter__(self):
        p = self.p
        self.saved = (p._encoder, p.batch_size, p.cache, list(p.notices))
        self.real = p._encoder
        p._encoder = self
        p.cache = EmbeddingCache(p.cache.max_bytes)  # isolated: the shared cache is neither read nor cleared
        return self

    def __exit__(self, *exc):
        p = self.p
        p._encoder, p.batch_size, p.cache, p.notices[:] = self.saved
        return False


@pytest.fixture(scope="module")
def brain(cases_dir):
    image, _label = load_case(BRAIN)
    return image, auto_window(image, modality="MR")


def test_out_of_memory_halves_the_batch_and_gives_the_same_masks(brain, caplog):
    image, window = brain
    pred = shared_predictor()
    normal = segment_volume(pred, image, window, BRAIN_BOX, axis="k", mode="official")
    with EncoderFault(pred, lambda: torch.cuda.OutOfMemoryError(CUDA_OOM), above=1) as fault:
        pred.batch_size = 3
        with caplog.at_level(logging.WARNING, logger="MedSAMSegmentLib.engine.predictor"):
            short = segment_volume(pred, image, window, BRAIN_BOX, axis="k", mode="official")
        notices, batch_size, cached = list(pred.notices), pred.batch_size, len(pred.cache)
    # Slices 14 and 15 were asked together, refused, then encoded one at a time; 13 came alone.
    assert fault.batches == [2, 1, 1, 1]
    assert batch_size == 1 and cached == 3
    notice = "CPU memory is short; encoding 1 slice(s) at a time"
    assert notices[-1:] == [notice] and notice in caplog.text
    assert short.slices == normal.slices == [14, 15, 13]
    assert normal.mask.any() and np.array_equal(short.mask, normal.mask)


@pytest.mark.parametrize(
    "error",
    [
        lambda: torch.cuda.OutOfMemoryError(CUDA_OOM),
        lambda: MemoryError(),
        lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                             "you tried to allocate 1073741824 bytes"),
    ],
    ids=["cuda-oom", "memory-error", "cpu-allocator"],
)
def test_out_of_memory_on_one_slice_on_the_cpu_is_a_clear_error_and_nothing_is_returned(error):
    pred = shared_predictor()
    volume = np.full((2, 48, 48), 100, np.int16)
    volume[:, 10:30, 12:34] = [[[300]], [[500]]]  # two different slices, so two encodes are asked
    window = auto_window(volume, modality="MR")
    encoded, done = pred.encoded, []
    with EncoderFault(pred, error, above=0) as fault:
        pred.batch_size = 2
        with pytest.raises(MedSAMError) as info:
            segment_volume(pred, volume, window, (10, 8, 0, 36, 32, 1), axis="k", mode="official",
                           progress=lambda d, t: done.append(d))
        notices, cached = list(pred.notices), len(pred.cache)
    assert type(info.value) is MedSAMError
    assert str(info.value).startswith("out of memory while encoding one slice on the CPU")
    assert isinstance(info.value.__cause__, (RuntimeError, MemoryError))
    assert fault.batches == [2, 1]  # halved once, then refused at one slice: no endless retry
    assert notices[-1] == "CPU memory is short; encoding 1 slice(s) at a time"
    assert cached == 0 and pred.encoded == encoded and done == []  # nothing encoded, cached or reported


def test_other_runtime_errors_are_not_taken_for_out_of_memory():
    pred = shared_predictor()
    image = np.tile(np.arange(40, dtype=np.uint8), (40, 1))
    with EncoderFault(pred, lambda: RuntimeError("expected input with 4 dimensions"), above=0) as fault:
        pred.batch_size = 2
        before = list(pred.notices)
        with pytest.raises(RuntimeError, match="^expected input with 4 dimensions$"):
            pred.embeddings(["a", "b"], lambda _key: image)
        notices, batch_size, cached = list(pred.notices), pred.batch_size, len(pred.cache)
    assert fault.batches == [2]  # no halving, no retry
    assert notices == before and batch_size == 2 and cached == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_out_of_memory_falls_back_to_the_cpu_with_a_notice_and_the_cpu_masks():
    from MedSAMSegmentLib.engine.predictor import Predictor

    k, j, i = np.ogrid[:3, :96, :96]
    volume = np.where((i - 44) ** 2 + (j - 50) ** 2 <= (14 + 2 * k) ** 2, 300 + 40 * k, 60).astype(np.int16)
    window = auto_window(volume, modality="MR")
    box = (24, 28, 0, 68, 74, 2)
    cpu = segment_volume(shared_predictor(), volume, window, box, axis="k", mode="official")
    gpu = Predictor(model="litemedsam", device="cuda", cache_mb=256, batch_size=2)
    assert gpu.device.type == "cuda" and gpu.encoder_dtype == torch.float32  # auto: float32 for LiteMedSAM (see device.py)
    batches = []

    def every_gpu_batch_fails(batch):  # until the predictor moves to the CPU and builds a new encoder
        batches.append(int(batch.shape[0]))
        raise torch.cuda.OutOfMemoryError(CUDA_OOM)

    gpu._encoder = every_gpu_batch_fails
    result = segment_volume(gpu, volume, window, box, axis="k", mode="official")
    assert batches == [2, 1]  # the batch of two slices, then one slice, failed on the GPU
    assert gpu.device.type == "cpu" and gpu.encoder_dtype == torch.float32
    assert gpu.notices == ["GPU memory is short; encoding 1 slice(s) at a time",
                           "CUDA ran out of memory; continuing on the CPU (slower)"]
    assert result.slices == cpu.slices == [1, 2, 0]
    assert cpu.mask.any() and np.array_equal(result.mask, cpu.mask)


def test_cli_out_of_memory_fails_with_one_line_and_no_output(tmp_path):
    # The encoder of the CLI's own predictor is wrapped as it is built (Predictor._set_fast_paths).
    prelude = textwrap.dedent(
        f"""
        import sys, torch
        from MedSAMSegmentLib.engine import predictor
        built = predictor.Predictor._set_fast_paths
        def _set_fast_paths(self):
            built(self)
            def out_of_memory(batch):
                raise torch.cuda.OutOfMemoryError({CUDA_OOM!r})
            self._encoder = out_of_memory
        predictor.Predictor._set_fast_paths = _set_fast_paths
        from MedSAMSegmentLib.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    out = tmp_path / "tumour.seg.nrrd"
    result = run_child(prelude, "segment", SAMPLE_IMAGE, "--box-ijk", *SAMPLE_BOX, "-o", out, "--device", "cpu", "-q")
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert "out of memory while encoding one slice on the CPU: CUDA out of memory" in result.stderr
    assert os.listdir(tmp_path) == []


# -- PyTorch missing -----------------------------------------------------------------------------

# Blocks `import torch` (and every torch.* module) as if PyTorch were not installed.
NO_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _NoTorch())
    for _name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        del sys.modules[_name]
    """
)


def test_the_blocker_really_blocks_torch():
    result = run_child(NO_TORCH + "import torch\n")
    assert result.returncode == 1 and "ModuleNotFoundError: No module named 'torch'" in result.stderr


def test_cli_without_torch_says_how_to_install_it_and_writes_nothing(tmp_path):
    code = NO_TORCH + "from MedSAMSegmentLib.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    out = tmp_path / "tumour.nii.gz"
    result = run_child(code, "segment", SAMPLE_IMAGE, "--box-ijk", *SAMPLE_BOX, "-o", out, "-q")
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert "PyTorch is not installed" in result.stderr and "pip install torch" in result.stderr
    assert "MedSAMSegment module" in result.stderr  # and how inside Slicer
    assert os.listdir(tmp_path) == []
    help_text = run_child(code, "segment", "--help")
    assert help_text.returncode == 0 and "--box-ijk" in help_text.stdout


def test_core_modules_import_and_fail_clearly_without_torch():
    pytest.importorskip("slicer", reason="slicer-core is not installed (mrml_logic needs it)")
    code = NO_TORCH + textwrap.dedent(
        """
        import MedSAMSegmentLib.mrml_bridge.mrml_logic, MedSAMSegmentLib.settings, MedSAMSegmentLib.model.registry
        import MedSAMSegmentLib.cli, MedSAMSegmentLib.fileio.imageio, MedSAMSegmentLib.engine.intensity
        import MedSAMSegmentLib.engine.geometry, MedSAMSegmentLib.fileio.markups, MedSAMSegmentLib.engine.propagation
        import MedSAMSegmentLib.engine.predictor
        assert "torch" not in sys.modules, "torch was imported"
        from MedSAMSegmentLib.errors import DependencyError
        from MedSAMSegmentLib.model.weights import load_state_dict, embedded_litemedsam_path
        from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic
        from MedSAMSegmentLib.settings import MedSAMSettings, shared_predictor
        settings = MedSAMSettings.from_dict({"device": "cpu"})
        for what, call in [("shared_predictor", lambda: shared_predictor(settings)),
                           ("logic.predictor", lambda: MedSAMLogic(settings).predictor),
                           ("load_state_dict", lambda: load_state_dict(embedded_litemedsam_path()))]:
            try:
                call()
            except DependencyError as exc:
                assert isinstance(exc, ImportError)
                print(what, "|", exc)
            else:
                print(what, "| NO ERROR")
        """
    )
    result = run_child(code)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" | ", 1) for line in result.stdout.splitlines())
    assert lines["shared_predictor"].startswith("PyTorch is not installed")
    assert "pip install torch" in lines["shared_predictor"]
    assert lines["logic.predictor"] == lines["shared_predictor"]
    assert lines["load_state_dict"] == "PyTorch is needed to load weights: install torch"


# -- Ctrl-C in mid-propagation ----------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="delivers a real SIGINT")
def test_ctrl_c_in_mid_propagation_exits_130_and_writes_nothing(tmp_path):
    # A real SIGINT, sent to itself by the child once the first slice is done.
    code = textwrap.dedent(
        """
        import os, signal, sys
        # A shell starts background jobs with SIGINT ignored and children inherit that; a user
        # at a terminal has Python's default handler, which is what this test is about.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from MedSAMSegmentLib import cli
        shown = cli.ProgressBar.__call__
        def progress(self, done, total):
            shown(self, done, total)
            if done == 1:
                os.kill(os.getpid(), signal.SIGINT)
        cli.ProgressBar.__call__ = progress
        sys.exit(cli.main(sys.argv[1:]))
        """
    )
    out = tmp_path / "tumour.seg.nrrd"
    result = run_child(code, "segment", SAMPLE_IMAGE, "--box-ijk", *SAMPLE_BOX, "-o", out, "--device", "cpu")
    assert result.returncode == 130, result.stderr
    assert "segmenting: 1/3" in result.stderr  # it was stopped after the first of three slices
    assert result.stderr.endswith("medsam-segment: error: interrupted; nothing was written\n")
    assert os.listdir(tmp_path) == []


class _NotHandled(Exception):
    """Raised by the test's own SIGTERM handler: the CLI did not install one (the test then fails)."""


@pytest.fixture
def sigterm_guard():
    """A real SIGTERM to this process must never kill the test run: a fallback handler, restored after."""
    if os.name != "posix":
        pytest.skip("delivers a real SIGTERM")

    def fallback(signum, frame):
        raise _NotHandled("SIGTERM reached the test's handler")

    previous = signal.signal(signal.SIGTERM, fallback)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_in_mid_propagation_exits_143_and_writes_nothing(tmp_path, capsys, monkeypatch, sigterm_guard):
    # SIGTERM is what `timeout`, Slurm and `docker stop` send: the same clean-up as Ctrl-C.
    # A real signal to this very process, in the CLI's main thread, once the first slice is done.
    from MedSAMSegmentLib import cli

    shown = cli.ProgressBar.__call__

    def progress(self, done, total):
        shown(self, done, total)
        if done == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cli.ProgressBar, "__call__", progress)
    out = tmp_path / "tumour.nii.gz"
    status, _, err = call(capsys, "segment", SAMPLE_IMAGE, "--box-ijk", *SAMPLE_BOX, "-o", out, "--device", "cpu")
    assert status == 143, err
    assert "segmenting: 1/3" in err and "segmenting: 3/3" not in err
    assert err.endswith("medsam-segment: error: terminated; nothing was written\n")
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM).__name__ == "fallback"  # the CLI restored the handler


def test_sigterm_between_the_temporary_write_and_the_rename_leaves_nothing(tmp_path, capsys, monkeypatch,
                                                                         sigterm_guard):
    from MedSAMSegmentLib.fileio.imageio import PAUSE_BEFORE_RENAME_ENV

    (tmp_path / "out").mkdir()
    flag, out = tmp_path / "paused", tmp_path / "out" / "tumour.nii.gz"
    monkeypatch.setenv(PAUSE_BEFORE_RENAME_ENV, str(flag))
    seen = []

    def terminate_when_paused():  # as `timeout` would, from outside the CLI's thread
        for _ in range(1200):
            if flag.exists():
                seen.extend(os.listdir(tmp_path / "out"))
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=terminate_when_paused, daemon=True)
    watcher.start()
    status, _, err = call(capsys, "segment", SAMPLE_IMAGE, "--box-ijk", *SAMPLE_BOX[:2], "14", *SAMPLE_BOX[3:5],
                          "14", "-o", out, "-q", "--device", "cpu")
    watcher.join(5)
    assert len(seen) == 1 and seen[0].endswith(".part.nii.gz")  # written, not yet renamed, when it came
    assert status == 143, err
    assert err == "medsam-segment: error: terminated; nothing was written\n"
    assert os.listdir(tmp_path / "out") == []


# -- stdout and stderr that cannot be written -----------------------------------------------------


def closed_pipe():
    """The write end of a pipe whose reader has gone, as in `medsam-segment ... | true`."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_an_unwritable_stdout_or_stderr_never_decides_the_result(tmp_path, closed):
    # One stream is a pipe nobody reads (`| true`), the other /dev/full (`> /dev/full`, `2>/dev/full`).
    full = "stderr" if closed == "stdout" else "stdout"
    pipe, device = closed_pipe(), os.open("/dev/full", os.O_WRONLY)
    out = tmp_path / "tumour.seg.nrrd"
    code = "import sys\nfrom MedSAMSegmentLib.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    args = ["segment", SAMPLE_IMAGE, "--box-ijk", *SAMPLE_BOX[:2], "14", *SAMPLE_BOX[3:5], "14", "-o", out]
    streams = {closed: pipe, full: device}
    try:
        result = subprocess.run([sys.executable, "-c", code, *map(str, args), "--device", "cpu"], env=child_env(),
                                timeout=300, **streams)
        refused = subprocess.run([sys.executable, "-c", code, *map(str, args), "--key-slice", "99"],
                                 env=child_env(), timeout=300, **streams)
    finally:
        os.close(pipe)
        os.close(device)
    assert result.returncode == 0  # the work's own status
    assert os.listdir(tmp_path) == ["tumour.seg.nrrd"]
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out)))[14].any()
    assert refused.returncode == 2  # and a refusal keeps its own status too


# -- two segmentations at once, MRML on the main thread only -------------------------------------


def _disk_volume(radius, value):
    k, j, i = np.ogrid[:3, :64, :64]
    volume = np.full((3, 64, 64), 40, np.int16)
    volume[np.broadcast_to((i - 30) ** 2 + (j - 34) ** 2 <= radius**2, volume.shape)] = value
    volume[2] += 7  # slices differ, so each one is encoded
    return volume


class MrmlCallsOffMainThread:
    """A profile hook (threading.setprofile) recording every call into VTK/MRML objects or the
    MRML helpers made from a thread other than the main one."""

    def __init__(self):
        import threading

        import vtk

        self.vtk_base = vtk.vtkObjectBase
        self.main = threading.main_thread()
        self.threading = threading
        self.seen = []

    def __call__(self, frame, event, arg):
        if self.threading.current_thread() is self.main:
            return
        if event == "c_call" and isinstance(getattr(arg, "__self__", None), self.vtk_base):
            self.seen.append(f"{type(arg.__self__).__name__}.{arg.__name__}")
        elif event == "call":
            module = frame.f_globals.get("__name__", "")
            if module == "slicer" or module.startswith(("slicer.", "MedSAMSegmentLib.mrml_bridge.mrml_io")):
                self.seen.append(f"{module}.{frame.f_code.co_name}")


def test_two_mrml_segmentations_at_once_keep_mrml_on_the_main_thread(slicer_core, vtk_messages):
    import threading

    from MedSAMSegmentLib.mrml_bridge import mrml_io
    from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic

    logic = MedSAMLogic(predictor=shared_predictor())
    matrix = np.diag([0.7, 0.7, 3.0, 1.0])
    volumes = {"small": slicer_core.addVolume(_disk_volume(9, 400), matrix, "small"),
               "large": slicer_core.addVolume(_disk_volume(14, 700), matrix, "large")}
    box = (14, 18, 1, 46, 50, 2)
    requests = {name: logic.prepare(node, indexBox=box, axis="k") for name, node in volumes.items()}  # main thread
    hook = MrmlCallsOffMainThread()
    results, errors = {}, []

    def work(name):
        try:
            results[name] = logic.run(requests[name])[0]
        except Exception as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    # Positive control: the hook does see MRML calls made from a worker thread.
    threading.setprofile(hook)
    try:
        probe = threading.Thread(target=lambda: volumes["small"].GetName())
        probe.start()
        probe.join()
        assert hook.seen == ["vtkMRMLScalarVolumeNode.GetName"]
        hook.seen.clear()
        threads = [threading.Thread(target=work, args=(name,)) for name in volumes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        threading.setprofile(None)
    assert not errors, errors
    assert hook.seen == [], sorted(set(hook.seen))  # run() never touched MRML from its threads
    # The same requests, one after the other (embeddings now cached): the same masks.
    for name in volumes:
        assert np.array_equal(results[name], logic.run(requests[name])[0]), name
    # Writing happens on the main thread, into one segmentation.
    segmentation = slicer_core.addSegmentation(referenceVolume=volumes["small"])
    for name, node in volumes.items():
        segment = logic.writeMaskToSegment(results[name], node, segmentation, name)
        assert np.array_equal(mrml_io.readSegmentMask(segmentation, segment, node), results[name])
    assert results["large"].sum() > results["small"].sum() > 0
    assert not vtk_messages.errors
