"""`medsam-segment`: box-prompted MedSAM / LiteMedSAM segmentation of image files, without Slicer.

Exit status: 0 done; 2 usage or input error (bad option, image, box, ROI, existing output);
1 any other failure (weights, dependencies, writing); 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM). A failure prints one line, "medsam-segment: error: ...", on stderr and leaves no output
file behind. Progress and information on stdout/stderr never decide the result: a closed pipe or a
full disk there only silences them.
"""

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time

from .errors import CancelledError, InputError, MedSAMError, OutputError

PROG = "medsam-segment"
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143
SUPERIOR_RAS = (0.0, 0.0, 1.0)
DEFAULT_COLOR = (0.95, 0.35, 0.25)


class UsageError(Exception):
    """A mistake in the command line (exit status 2)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, Slurm, docker stop): unwinds and cleans up exactly as Ctrl-C does."""


def _write_safely(stream, text):
    """Write progress or information; a closed pipe or full disk only silences that stream.

    The stream's descriptor then points at the null device, so nothing later (nor Python's flush
    at exit) fails on it again and the exit status stays the work's own.
    """
    if stream is None:
        return
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, stream.fileno())
            finally:
                os.close(null)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage + message
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser():
    from .model.registry import DEFAULT_MODEL, known_models

    parser = _Parser(prog=PROG, description="MedSAM / LiteMedSAM box-prompted segmentation of medical images.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{segment,batch,demo,web}", parser_class=_Parser)

    seg = commands.add_parser(
        "segment",
        help="segment the object in a box through its slices",
        description="Segment the object inside a 3D box: the model runs slice by slice along one index axis, "
        "starting on the key slice and following the object to both ends of the box.",
    )
    seg.add_argument("image", help="input image (.nii, .nii.gz, .nrrd, .mha, ...)")
    prompt = seg.add_mutually_exclusive_group(required=True)
    prompt.add_argument(
        "--box-ijk", nargs=6, type=int, metavar=("I0", "J0", "K0", "I1", "J1", "K1"),
        help="inclusive voxel index box, ITK/SimpleITK index order (as Slicer's IJK)",
    )
    prompt.add_argument("--roi", metavar="FILE.mrk.json", help="Slicer markups ROI file (LPS or RAS)")
    seg.add_argument(
        "--output", "-o", required=True, metavar="FILE",
        help="result: .seg.nrrd (Slicer segmentation) or .nii, .nii.gz, .nrrd, .mha (0/1 labelmap)",
    )
    seg.add_argument(
        "--axis", choices=("i", "j", "k"),
        help="index axis to slice along (default: the one closest to the patient's superior-inferior axis)",
    )
    seg.add_argument("--key-slice", type=int, metavar="N", help="slice to start on (default: the box's middle)")
    seg.add_argument(
        "--add-box-ijk", nargs=6, type=int, action="append", metavar=("I0", "J0", "K", "I1", "J1", "K"),
        help="a box on one more key slice, one slice thick along the axis (repeatable): corrects the "
        "propagation there and from there; the slice range grows to hold it",
    )
    seg.add_argument("--model", choices=known_models(), default=DEFAULT_MODEL, help="default: %(default)s")
    seg.add_argument("--checkpoint", metavar="PATH", help="model weights file (else the embedded or cached copy)")
    seg.add_argument("--weights-url", metavar="URL", help="download the weights from URL into the user cache")
    seg.add_argument("--weights-sha256", metavar="HEX", help="required checksum of the weights (file or download)")
    seg.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: %(default)s")
    intensity = seg.add_mutually_exclusive_group()
    intensity.add_argument(
        "--window", nargs=2, type=float, metavar=("LEVEL", "WIDTH"), help="explicit intensity window"
    )
    intensity.add_argument(
        "--modality", choices=("CT", "MR"), type=str.upper,
        help="official window rule: CT 40/400, MR 0.5-99.5 percentiles (default: guessed from the image)",
    )
    seg.add_argument(
        "--propagation", choices=("default", "official"), default="default",
        help="official: the published LiteMedSAM 3D procedure; default: keeps large objects from shrinking "
        "and stops where the object ends",
    )
    seg.add_argument("--name", default="MedSAM", help="segment name in a .seg.nrrd (default: %(default)s)")
    seg.add_argument(
        "--color", nargs=3, type=float, metavar=("R", "G", "B"),
        help="segment colour, 0-1 (or 0-255) per channel",
    )
    _add_common(seg)
    seg.set_defaults(run=run_segment)

    from .batch.command import add_parser as add_batch_parser

    add_batch_parser(commands, _add_common)

    from .web.command import add_parser as add_web_parser

    add_web_parser(commands, _add_common)

    demo = commands.add_parser(
        "demo",
        help="segment the bundled brain MR sample and score it",
        description="Segment the tumour of the bundled pyradiomics brain MR with the embedded LiteMedSAM, "
        "write a .seg.nrrd and an overlay PNG, and print the Dice against the reference label.",
    )
    demo.add_argument(
        "--output-dir", default="medsam-demo-output", help="folder for the demo files (default: ./%(default)s)"
    )
    demo.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress, only the scores")
    demo.set_defaults(run=run_demo)
    return parser


def _add_common(parser):
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")


class ProgressBar:
    """Plain-text progress on stderr: redrawn in place on a terminal, a few lines in a log."""

    def __init__(self, label, stream=None, width=30, unit="", scale=1):
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self.unit, self.scale = unit, scale  # e.g. " MB", 1e-6 for a download in bytes
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last_tenth = -1

    def __call__(self, done, total):
        elapsed = time.perf_counter() - self.start
        amount = f"{done * self.scale:.0f}{self.unit}"
        if not total:  # size unknown (a download without Content-Length): a running count
            if self.tty:
                _write_safely(self.stream, f"\r{self.label} {amount} {elapsed:5.1f} s")
            return
        amount += f"/{total * self.scale:.0f}{self.unit}"
        if self.tty:
            filled = min(self.width, int(self.width * done / total))
            bar = "#" * filled + "-" * (self.width - filled)
            end = "\n" if done >= total else ""
            _write_safely(self.stream, f"\r{self.label} [{bar}] {amount} {elapsed:5.1f} s{end}")
        else:
            tenth = 10 * done // total
            if tenth == self._last_tenth:
                return
            self._last_tenth = tenth
            _write_safely(self.stream, f"{self.label}: {amount} ({elapsed:.1f} s)\n")


def _parse_color(values):
    if values is None:
        return DEFAULT_COLOR
    if not all(math.isfinite(v) for v in values) or any(v < 0 for v in values) or any(v > 255 for v in values):
        raise UsageError(f"--color {' '.join(f'{v:g}' for v in values)}: channels must be 0-1 or 0-255")
    return tuple(v / 255.0 for v in values) if any(v > 1 for v in values) else tuple(values)


def check_output(path, overwrite, inputs=()):
    """Before anything slow: the output's type, that it is none of `inputs` (image, ROI,
    checkpoint: even --overwrite never replaces those), that its name fits and that it can be
    created. UsageError (exit 2) otherwise; returns 'segmentation' or 'labelmap'."""
    from .fileio.imageio import check_not_an_input, check_output_path, output_kind

    try:
        kind = output_kind(path)
        check_not_an_input(path, inputs)
    except (InputError, OutputError) as exc:
        raise UsageError(str(exc)) from None
    if os.path.lexists(path) and not overwrite:
        raise UsageError(f"output {path} exists; pass --overwrite to replace it")
    try:
        check_output_path(path, overwrite)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    return kind


_check_output = check_output


def check_weights_options(model, checkpoint, url, sha256):
    """--weights-url / --weights-sha256 must be used, never ignored: UsageError for combinations
    that would ignore them (the checksum is applied to whichever file is used)."""
    from .model.registry import get_spec

    if url and not sha256:
        raise UsageError("--weights-url needs --weights-sha256 (a download is only used if its checksum matches)")
    if url and checkpoint:
        raise UsageError("--weights-url and --checkpoint exclude each other: give one source of weights")
    if url and get_spec(model).embedded:
        raise UsageError(
            f"--weights-url: the {model} weights are embedded, nothing is downloaded; "
            "pass --checkpoint PATH to use other weights"
        )


def _index_box(args, image, axis):
    from .engine import geometry

    if args.roi is not None:
        from .fileio.markups import read_roi_json

        roi_to_ras, size_mm = read_roi_json(args.roi)
        box = geometry.roi_index_box(roi_to_ras, size_mm, image.ras_to_ijk, image.shape)
    else:
        box = args.box_ijk
    box = geometry.validate_index_box(box, image.shape, axis)
    first, last = geometry.slice_range(box, axis)
    if args.key_slice is not None and not first <= args.key_slice <= last:
        raise InputError(f"--key-slice {args.key_slice} is outside the box's slices {first}-{last} along {axis}")
    return box


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide C-level messages (ITK's writers print their own) so a failure stays one line."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def write_result(path, kind, mask, image, name, color, overwrite, tags=None):
    from .fileio.imageio import write_labelmap, write_seg_nrrd

    with _native_stderr_silenced():
        if kind == "segmentation":
            write_seg_nrrd(path, mask, image, name, color, overwrite=overwrite, tags=tags)
        else:
            write_labelmap(path, mask, image, overwrite=overwrite)


def run_segment(args, say):
    check_weights_options(args.model, args.checkpoint, args.weights_url, args.weights_sha256)
    color = _parse_color(args.color)
    kind = check_output(args.output, args.overwrite, inputs=(args.image, args.roi, args.checkpoint))
    if kind == "segmentation" and (not args.name.strip() or any(ch in args.name for ch in "\r\n")):
        raise UsageError(f"--name {args.name!r} must be one non-empty line")

    from .engine import geometry
    from .engine.intensity import auto_window
    from .fileio.imageio import read_image

    started = time.perf_counter()
    image = read_image(args.image)
    for note in image.notes:
        say(f"note: {note}")
    if args.axis:
        axis = args.axis
    else:
        axis = geometry.closest_index_axis(image.ijk_to_ras, SUPERIOR_RAS)
        say(f"slice axis: {axis} (the index axis closest to superior-inferior)")
    box = _index_box(args, image, axis)
    clipped = args.box_ijk is not None and tuple(box) != tuple(args.box_ijk)
    say(f"box (i0 j0 k0 i1 j1 k1): {' '.join(map(str, box))}" + (" (clipped to the image)" if clipped else ""))
    from .engine.key_boxes import added_boxes_from_index_boxes  # checked here, before the model is loaded

    add_boxes = added_boxes_from_index_boxes(args.add_box_ijk, image.shape, axis, what="--add-box-ijk")
    window = _window(image.array, args)
    say(f"intensity: {window.description}")

    from .engine.predictor import Predictor
    from .engine.propagation import segment_volume

    options = {"url": args.weights_url, "sha256": args.weights_sha256}
    if not args.quiet:  # used only if the weights have to be downloaded
        options["progress"] = ProgressBar("downloading weights", unit=" MB", scale=1e-6)
    predictor = Predictor(args.model, checkpoint=args.checkpoint, device=args.device, **options)
    say(f"model: {predictor.model_name} on {predictor.device}")
    progress = None if args.quiet else ProgressBar("segmenting")
    result = segment_volume(
        predictor, image.array, window, box, axis=axis, key_slice=args.key_slice,
        mode=args.propagation, progress=progress, add_boxes=add_boxes,
    )
    for notice in predictor.notices:
        say(f"note: {notice}")
    tags = {"MedSAMSegment.Model": predictor.model_name, "MedSAMSegment.Propagation": args.propagation}
    write_result(args.output, kind, result.mask, image, args.name, color, args.overwrite, tags)
    say(_summary(args.output, result, image, axis, time.perf_counter() - started))
    return 0


def _window(array, args):
    from .engine.intensity import NO_CONTRAST_HINT, auto_window

    try:
        return auto_window(array, modality=args.modality, window=args.window)
    except InputError as exc:
        if NO_CONTRAST_HINT not in str(exc):
            raise
        raise InputError(f"{exc} (--window LEVEL WIDTH, or --modality CT|MR)") from None


def _summary(path, result, image, axis, seconds):
    import numpy as np

    from .engine.geometry import numpy_axis

    voxels = int(result.mask.sum())
    millilitres = voxels * abs(np.linalg.det(image.ijk_to_ras[:3, :3])) / 1000.0
    in_plane = tuple(a for a in range(3) if a != numpy_axis(axis))
    slices = int(np.count_nonzero(result.mask.any(axis=in_plane)))
    stops = "; ".join(f"{way}: {why}" for way, why in result.stop_reasons.items() if why)
    return (
        f"wrote {path}: {voxels} voxels ({millilitres:.2f} mL) on {slices} slice{'s' * (slices != 1)} "
        f"({len(result.slices)} segmented), {seconds:.1f} s" + (f"; stopped {stops}" if stops else "")
    )


def run_demo(args, say):
    from .demo import check_output_dir, run_demo as demo

    try:
        check_output_dir(args.output_dir)  # exit 2 like segment's output checks, before any work
    except OutputError as exc:
        raise UsageError(str(exc)) from None

    def report(text):  # scores and file names: shown even with --quiet
        _write_safely(sys.stdout, text + "\n")

    return demo(args.output_dir, device=args.device, say=say, progress=None if args.quiet else ProgressBar, report=report)


def _fail(message, status):
    text = " ".join(str(message).split()) or "failed"
    _write_safely(sys.stderr, f"{PROG}: error: {text}\n")
    return status


@contextlib.contextmanager
def _sigterm_interrupts():
    """While the CLI runs, SIGTERM raises Terminated (a KeyboardInterrupt): the same clean-up as Ctrl-C."""

    def terminate(signum, frame):
        raise Terminated()

    previous = None
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        with contextlib.suppress(ValueError, OSError):
            previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _identity(path):
    try:
        stat = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


def _interrupted(exc, output, before):
    """Exit 130 (Ctrl-C, cancel) or 143 (SIGTERM), saying whether the output had been completed."""
    status, what = (EXIT_TERMINATED, "terminated") if isinstance(exc, Terminated) else (EXIT_INTERRUPTED, "interrupted")
    if output is not None and _identity(output) not in (None, before):
        return _fail(f"{what} after {output} was written (it is complete)", status)
    return _fail(f"{what}; nothing was written", status)


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _fail(exc, EXIT_USAGE)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0

    def say(text):
        if not args.quiet:
            _write_safely(sys.stdout, text + "\n")

    output = getattr(args, "output", None)
    before = _identity(output) if output else None
    try:
        with _sigterm_interrupts():
            return args.run(args, say)
    except (UsageError, InputError) as exc:
        return _fail(exc, EXIT_USAGE)
    except (KeyboardInterrupt, CancelledError) as exc:
        return _interrupted(exc, output, before)
    except MedSAMError as exc:  # weights, dependencies, writing (OutputError): nothing was left behind
        return _fail(exc, EXIT_FAILURE)
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("MEDSAM_DEBUG"):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (set MEDSAM_DEBUG=1 for the traceback)", EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
