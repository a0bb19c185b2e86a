"""`medsam-segment demo`: the bundled brain MR, prompted as in the official 3D protocol, scored.

The prompt is what the official LiteMedSAM evaluation derives from a reference label: the tight
in-plane box of the label on its middle slice, stretched over the label's slice range. Both
propagation modes run from it and are scored by Dice; the second re-uses the slice embeddings.
"""

import os
import time
from pathlib import Path

import numpy as np

from .engine.metrics import dice
from .errors import InputError, OutputError

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "pyradiomics-brain1"
SAMPLE_IMAGE, SAMPLE_LABEL = SAMPLE_DIR / "brain1_image.nrrd", SAMPLE_DIR / "brain1_label.nrrd"
SEGMENTATION_NAME, OVERLAY_NAME = "brain1_tumour.seg.nrrd", "brain1_overlay.png"
MODES = ("default", "official")
# The mark the demo leaves in its files (a NRRD header field, a PNG text chunk): it replaces
# only files carrying it, never a user's own file of the same name.
MARK_KEY, MARK_VALUE = "MedSAMSegment.Demo", "brain1"


def _written_by_demo(path):
    from .fileio.imageio import nrrd_header_field
    from .overlay import read_png_text

    if path.endswith(".png"):
        return read_png_text(path).get(MARK_KEY) == MARK_VALUE
    return nrrd_header_field(path, MARK_KEY) == MARK_VALUE


def check_output_dir(output_dir):
    """Create output_dir and check the demo may write its two files there, before any work.

    OutputError if it is not a folder, cannot be written, or holds a file of the demo's names
    that the demo did not write (it is never replaced).
    """
    from .fileio.imageio import check_output_path

    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputError(f"the output folder {output_dir} is not a folder")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {output_dir}: {exc.strerror or exc}") from None
    paths = [os.path.join(output_dir, name) for name in (SEGMENTATION_NAME, OVERLAY_NAME)]
    for path in paths:
        if os.path.lexists(path) and not (os.path.isfile(path) and _written_by_demo(path)):
            raise OutputError(
                f"{path} exists and was not written by the demo: it is left alone; "
                "move it away or choose another --output-dir"
            )
        check_output_path(path, overwrite=True)
    return paths


def official_box(reference_kji):
    """(i0, j0, k0, i1, j1, k1): label bbox on its middle slice (as the official code picks it) + k range."""
    ks = np.nonzero(reference_kji.any(axis=(1, 2)))[0]
    if ks.size == 0:
        raise InputError("the reference label is empty")
    k0, k1 = int(ks.min()), int(ks.max())
    middle = int((k1 - k0) / 2 + k0)
    js, is_ = np.nonzero(reference_kji[middle])
    return (int(is_.min()), int(js.min()), k0, int(is_.max()), int(js.max()), k1)


def _crop_around(masks, shape_jk, margin=0.6):
    """(y0, y1, x0, x1) around the union of the masks' in-plane extents, with a relative margin."""
    union = np.any([m.any(axis=0) for m in masks], axis=0)
    ys, xs = np.nonzero(union)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    pad = int(margin * max(h, w))
    return (
        max(0, ys.min() - pad), min(shape_jk[0], ys.max() + 1 + pad),
        max(0, xs.min() - pad), min(shape_jk[1], xs.max() + 1 + pad),
    )


def run_demo(output_dir="medsam-demo-output", device="auto", say=print, progress=None, report=print):
    """Segment, write the .seg.nrrd (default mode) and the overlay PNG; returns 0.

    `say` gets the details, `report` the scores and file names (shown even when quiet);
    `progress(label)` makes a progress callback. The demo's own files in output_dir are replaced,
    other files of the same names never (OutputError before any work, see check_output_dir).
    """
    from . import overlay
    from .engine.intensity import auto_window
    from .engine.predictor import Predictor
    from .engine.propagation import segment_volume
    from .fileio.imageio import read_image, write_seg_nrrd

    seg_path, png_path = check_output_dir(output_dir)
    image = read_image(SAMPLE_IMAGE)
    reference = (read_image(SAMPLE_LABEL).array > 0).astype(np.uint8)
    box = official_box(reference)
    window = auto_window(image.array, modality="MR")
    say(f"sample: {SAMPLE_IMAGE.name} {image.shape[::-1]} (I, J, K); reference label {int(reference.sum())} voxels")
    say(f"prompt (official 3D protocol): box i0 j0 k0 i1 j1 k1 = {' '.join(map(str, box))}; {window.description}")

    started = time.perf_counter()
    predictor = Predictor("litemedsam", device=device)
    say(f"model: {predictor.model_name} on {predictor.device}, loaded in {time.perf_counter() - started:.1f} s")
    results = {}
    for mode in MODES:
        # The second mode finds the slices already encoded (the predictor's cache): only the
        # prompt decoder runs again, as when a user retries a box in Slicer.
        encoded_before, t0 = predictor.encoded, time.perf_counter()
        bar = progress(f"{mode} propagation") if progress else None
        result = segment_volume(predictor, image.array, window, box, axis="k", mode=mode, progress=bar)
        results[mode] = result
        report(
            f"{mode:>8} propagation: Dice {dice(result.mask, reference):.3f} vs the reference label, "
            f"{len(result.slices)} slices ({predictor.encoded - encoded_before} encoded), "
            f"{time.perf_counter() - t0:.1f} s"
        )

    check_output_dir(output_dir)  # again: a file may have appeared while the model ran
    write_seg_nrrd(
        seg_path, results["default"].mask, image, "Tumour (MedSAM)", (0.95, 0.35, 0.25), overwrite=True,
        fields={MARK_KEY: MARK_VALUE},
    )
    masks = [reference] + [r.mask for r in results.values()]
    rows = [
        (f"{mode} propagation: Dice {dice(r.mask, reference):.2f}  (green: reference, red: LiteMedSAM)", r.mask)
        for mode, r in results.items()
    ]
    picture = overlay.render(
        window.apply_volume(image.array), reference, rows,
        slices=np.linspace(box[2], box[5], 4).round().astype(int).tolist(),
        flips=overlay.display_flips(image.ijk_to_ras), crop=_crop_around(masks, image.shape[1:]),
    )
    overlay.write_png(png_path, picture, overwrite=True, text={MARK_KEY: MARK_VALUE})
    report(f"wrote {seg_path} and {png_path}; total {time.perf_counter() - started:.1f} s")
    return 0
