"""The bad-input matrix cases no other test file covers (docs/FAULTS.md maps every case to its tests).

Boxes the engine must refuse, images of every voxel type / label maps / extreme values / one voxel
thick axes pushed through the real model, very anisotropic and non-orthogonal images and an ROI of
another image through the CLI, a checkpoint of the wrong architecture, and folders this process may
not write (as an unprivileged user, so the check also binds when the tests run as root).

The model is cheap here: slices are cached by content and most images below window to the same
uint8 slice, so the whole file encodes only a handful of slices.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from engine_support import dice, shared_predictor
from helpers_http import LocalServer
from cli_support import assert_one_line_error, call
from MedSAMSegmentLib import overlay
from MedSAMSegmentLib.demo import OVERLAY_NAME, SEGMENTATION_NAME
from MedSAMSegmentLib.engine import geometry
from MedSAMSegmentLib.engine.intensity import auto_window, explicit_window
from MedSAMSegmentLib.engine.propagation import segment_slice, segment_volume
from MedSAMSegmentLib.errors import InputError, OutputError
from MedSAMSegmentLib.fileio import imageio
from MedSAMSegmentLib.fileio.imageio import read_image
from MedSAMSegmentLib.fileio.markups import write_roi_json

LIB_DIR = Path(__file__).resolve().parent.parent / "MedSAMSegment"
LESION = (slice(24, 40), slice(20, 44))  # rows (y = j), columns (x = i) of the object in every test slice
LESION_BOX = (16, 18, 47, 45)  # x0, y0, x1, y1 around it, inclusive


def lesion_volume(dtype=np.int16, background=20, lesion=90, shape=(2, 64, 64)):
    volume = np.full(shape, background, dtype)
    volume[(slice(None),) + LESION] = lesion
    return volume


def lesion_mask(shape=(64, 64)):
    mask = np.zeros(shape, np.uint8)
    mask[LESION] = 1
    return mask


def save(array, path, spacing=None, direction=None, origin=None, vector=False):
    img = sitk.GetImageFromArray(array, isVector=vector)
    if spacing is not None:
        img.SetSpacing(spacing)
    if direction is not None:
        img.SetDirection(tuple(np.asarray(direction, float).ravel()))
    if origin is not None:
        img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return str(path)


@pytest.fixture(scope="module")
def reference_mask():
    """The mask of the lesion slice as every equivalent image below must give it (one encode)."""
    volume = lesion_volume()
    mask = segment_slice(shared_predictor(), volume, auto_window(volume), "k", 1, LESION_BOX)
    assert dice(mask, lesion_mask()) > 0.8
    return mask


# -- boxes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box, axis, message",
    [
        ([], "k", "must be 6 numbers .* got 0"),
        (None, "k", "must be 6 finite numbers .* got None"),
        ((10, 10, 0, float("nan"), 30, 1), "k", "must be 6 finite numbers"),
        ((10, 30, 0, 30, 10, 1), "k", "inverted along j: 30 > 10"),
        ((10, 10, 1, 30, 30, 0), "k", "inverted along k: 1 > 0"),
        ((10, 10, 0, 30, 30, 0), "j", "too small to segment: 21 x 1 voxels"),  # zero height in an i-k slice
        ((10, 10, -9, 30, 30, -1), "k", "k range \\[-9, -1\\] is outside the volume \\(valid 0..1\\)"),
        ((10, 10, 2, 30, 30, 7), "k", "k range \\[2, 7\\] is outside the volume \\(valid 0..1\\)"),
        ((-40, 10, 0, -1, 30, 1), "k", "i range \\[-40, -1\\] is outside"),
        ((63, 10, 0, 90, 30, 1), "k", "too small to segment: 1 x 21 voxels"),  # clipped to the last column
    ],
    ids=["empty", "none", "nan", "inverted-j", "inverted-k", "flat-in-plane", "slices-below",
         "slices-above", "left-of-volume", "one-column-left-after-clipping"],
)
def test_bad_boxes_are_refused_before_the_model_runs(box, axis, message):
    pred = shared_predictor()
    volume = lesion_volume()
    encoded, progress = pred.encoded, []
    with pytest.raises(InputError, match=message):
        segment_volume(pred, volume, auto_window(volume), box, axis=axis, progress=lambda *a: progress.append(a))
    assert pred.encoded == encoded and progress == []


def test_a_slice_outside_the_volume_is_refused_for_one_slice_segmentation():
    pred = shared_predictor()
    volume = lesion_volume()
    encoded = pred.encoded
    for index in (2, -1):
        with pytest.raises(InputError, match=f"slice {index} is outside the volume along k"):
            segment_slice(pred, volume, auto_window(volume), "k", index, LESION_BOX)
    with pytest.raises(InputError, match="the box i range \\[70, 80\\] is outside the volume"):
        segment_slice(pred, volume, auto_window(volume), "k", 1, (70, 18, 80, 45))
    assert pred.encoded == encoded


@pytest.mark.parametrize(
    "size, centre, message",
    [
        ((4, 0, 4), (5, 5, 5), "ROI has zero size along an axis \\(size \\(4.0, 0.0, 4.0\\) mm\\)"),
        ((4, 0.5, 4), (5, 5.5, 5), "ROI contains no voxel centre of the volume \\(it is thinner than the voxel"),
    ],
    ids=["zero-size", "between-voxel-centres"],
)
def test_an_roi_holding_no_voxel_is_refused_with_the_reason(size, centre, message):
    roi_to_ras = np.eye(4)
    roi_to_ras[:3, 3] = centre
    with pytest.raises(InputError, match=message):
        geometry.roi_index_box(roi_to_ras, size, np.eye(4), (20, 20, 20))


def test_an_infinite_box_coordinate_is_an_input_error():
    with pytest.raises(InputError, match="must be 6 finite numbers"):
        geometry.validate_index_box((10, 10, 0, float("inf"), 30, 1), (2, 64, 64))


def test_partly_outside_box_is_clipped_and_segments_the_same(reference_mask):
    pred = shared_predictor()
    volume = lesion_volume()
    result = segment_volume(pred, volume, auto_window(volume), (16, 18, 1, 47, 45, 9), axis="k")
    assert result.slices == [1]  # the slice range 1..9 became 1..1
    assert np.array_equal(result.mask[1], reference_mask) and not result.mask[0].any()


# -- images: voxel types, label maps, extreme and non-finite values ----------------------------------

DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
          np.float16, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_integer_and_float_type_segments_like_int16(dtype, reference_mask):
    pred = shared_predictor()
    volume = lesion_volume(dtype)
    window = auto_window(volume)
    assert window.description.startswith("MR percentiles") and (window.lo, window.hi) == (20.0, 90.0)
    encoded = pred.encoded
    mask = segment_slice(pred, volume, window, "k", 1, LESION_BOX)
    assert pred.encoded == encoded  # the windowed slice is the int16 one, byte for byte
    assert mask.dtype == np.uint8 and np.array_equal(mask, reference_mask)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_nan_and_inf_voxels_become_black_and_change_nothing_else(dtype, reference_mask):
    pred = shared_predictor()
    volume = lesion_volume(dtype)
    volume[:, 0, :3] = [np.nan, np.inf, -np.inf]  # in the background of both slices
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" warnings either
        window = auto_window(volume)
        image = window.apply(volume[1])
    assert (window.lo, window.hi) == (20.0, 90.0) and image[0, :3].tolist() == [0, 0, 0]
    encoded = pred.encoded
    assert np.array_equal(segment_slice(pred, volume, window, "k", 1, LESION_BOX), reference_mask)
    assert pred.encoded == encoded


@pytest.mark.parametrize(
    "dtype, low, high",
    [(np.int32, -(2**31), 2**31 - 1), (np.int64, -(2**63), 2**63 - 1), (np.uint64, 0, 2**64 - 1),
     (np.float32, -3.4e38, 3.4e38), (np.float64, -1.7e308, 1.7e308)],
    ids=["int32", "int64", "uint64", "float32", "float64"],
)
def test_extreme_values_neither_overflow_nor_move_the_window(dtype, low, high, reference_mask):
    pred = shared_predictor()
    volume = lesion_volume(dtype)
    volume[0, 0, 0], volume[0, 0, 1] = low, high  # two outliers on the other slice
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings
        window = auto_window(volume)
        outliers = window.apply(volume[0])[0, :2].tolist()
    assert (window.lo, window.hi) == (20.0, 90.0)  # the 0.5-99.5 percentiles ignore them
    assert outliers == [0, 255]  # clipped into the window
    encoded = pred.encoded
    assert np.array_equal(segment_slice(pred, volume, window, "k", 1, LESION_BOX), reference_mask)
    assert pred.encoded == encoded


def test_an_infinite_window_width_is_refused():
    with pytest.raises(InputError, match="width"):
        explicit_window(lesion_volume(), 40.0, float("inf"))


def test_a_label_map_file_is_segmented_as_a_grey_image(tmp_path, reference_mask):
    labels = np.zeros((3, 64, 64), np.uint8)
    labels[:, 8:56, 8:56] = 1  # an organ
    labels[(slice(None),) + LESION] = 2  # a lesion inside it
    image = read_image(save(labels, tmp_path / "labels-label.nrrd"))
    window = auto_window(image.array)
    assert window.description.startswith("MR percentiles") and (window.lo, window.hi) == (1.0, 2.0)
    # Labels 0 and 1 become black, label 2 white: the same picture as the grey lesion image.
    pred = shared_predictor()
    encoded = pred.encoded
    assert np.array_equal(segment_slice(pred, image.array, window, "k", 1, LESION_BOX), reference_mask)
    assert pred.encoded == encoded


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_], ids=["uint8", "bool"])
def test_a_binary_label_map_needs_an_explicit_window(dtype, reference_mask):
    binary = lesion_volume(dtype, background=0, lesion=1, shape=(3, 64, 64))
    with pytest.raises(InputError, match=r"MR percentiles 0.5-99.5 of voxels > 0 has no width on this image \(it spans "
                                         r"\[1, 1\], the image \[0, 1\]\): the image is binary, a label map or nearly "
                                         "constant"):
        auto_window(binary)
    window = explicit_window(binary, 0.5, 1.0)  # e.g. --window 0.5 1
    pred = shared_predictor()
    encoded = pred.encoded
    assert np.array_equal(segment_slice(pred, binary, window, "k", 1, LESION_BOX), reference_mask)
    assert pred.encoded == encoded


def test_a_complex_valued_file_is_refused(tmp_path):
    path = save((np.arange(60).reshape(3, 4, 5) + 1j).astype(np.complex64), tmp_path / "complex.mha")
    with pytest.raises(InputError, match="has 2 values per voxel .*only grey-level or RGB images can be segmented"):
        read_image(path)


def collinear_axes_nrrd(path):
    """A NRRD whose i and j axes point the same way (a broken header; ITK refuses to read it)."""
    header = (
        "NRRD0004\ntype: int16\ndimension: 3\nspace: left-posterior-superior\nsizes: 5 4 3\n"
        "space directions: (1,0,0) (1,0,0) (0,0,1)\nkinds: domain domain domain\nendian: little\n"
        "encoding: raw\nspace origin: (0,0,0)\n\n"
    )
    Path(path).write_bytes(header.encode() + np.arange(60, dtype="<i2").tobytes())
    return str(path)


def test_a_file_with_collinear_axes_is_refused(tmp_path):
    with pytest.raises(InputError, match="cannot read .*collinear.nrrd as an image"):
        read_image(collinear_axes_nrrd(tmp_path / "collinear.nrrd"))


def test_the_collinear_axes_refusal_says_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="direction"):
        read_image(collinear_axes_nrrd(tmp_path / "collinear.nrrd"))


# -- images: one voxel thick -------------------------------------------------------------------------


def test_axes_one_voxel_thick_segment_along_the_thin_axis_and_refuse_the_others():
    flat = np.full((32, 1, 64), 20, np.int16)  # K = 32, J = 1, I = 64: one row of voxels per k slice
    flat[8:24, 0, 20:44] = 90
    pred = shared_predictor()
    window = auto_window(flat)
    encoded = pred.encoded
    for axis, box, message in [("k", (16, 0, 4, 47, 0, 27), "too small to segment: 32 x 1 voxels"),
                               ("i", (30, 0, 4, 30, 0, 27), "too small to segment: 1 x 24 voxels")]:
        with pytest.raises(InputError, match=message):
            segment_volume(pred, flat, window, box, axis=axis)
    assert pred.encoded == encoded
    result = segment_volume(pred, flat, window, (16, 0, 4, 47, 0, 27), axis="j")  # the one i-k slice
    assert result.slices == [0] and result.mask.shape == flat.shape
    assert dice(result.mask[:, 0, :], flat[:, 0, :] == 90) > 0.8


def test_cli_refuses_the_in_plane_thin_axis_with_a_hint_of_the_size(tmp_path, capsys):
    path = save(np.tile(np.arange(64, dtype=np.int16), (6, 1, 1)), tmp_path / "flat.nrrd")
    (tmp_path / "out").mkdir()
    status, _, err = call(capsys, "segment", path, "--box-ijk", 16, 0, 0, 47, 0, 5, "-o", tmp_path / "out" / "m.nrrd")
    assert status == 2
    assert_one_line_error(err)
    assert "too small to segment: 32 x 1 voxels in the slice (at least 2 x 2 needed)" in err
    assert os.listdir(tmp_path / "out") == []


# -- through the CLI: 2D, anisotropic + non-orthogonal, ROI of another image, time series ------------


def test_cli_segments_a_2d_image_and_writes_a_2d_labelmap(tmp_path, capsys):
    grey = lesion_volume(shape=(1, 64, 64))[0]
    path = save(grey, tmp_path / "slice.nrrd", spacing=(0.4, 0.4), origin=(3.0, -7.0))
    out = tmp_path / "mask.nrrd"
    # The box reaches past the right edge (i1 = 90 of 0..63): clipped, and said so.
    box = (*LESION_BOX[:2], 0, 90, LESION_BOX[3], 0)
    status, stdout, err = call(capsys, "segment", path, "--box-ijk", *box, "-o", out)
    assert status == 0, err
    assert "box (i0 j0 k0 i1 j1 k1): 16 18 0 63 45 0 (clipped to the image)" in stdout
    written = sitk.ReadImage(str(out))
    assert written.GetDimension() == 2 and written.GetSize() == (64, 64)
    assert written.GetSpacing() == (0.4, 0.4) and written.GetOrigin() == (3.0, -7.0)
    assert dice(sitk.GetArrayFromImage(written), lesion_mask()) > 0.8
    assert sorted(os.listdir(tmp_path)) == ["mask.nrrd", "slice.nrrd"]


def test_cli_very_anisotropic_non_orthogonal_image_with_an_roi(tmp_path, capsys):
    spacing = (0.15, 0.15, 30.0)  # 200 : 1
    shear = np.array([[1.0, 0.25, 0.0], [0.0, 1.0, 0.0], [0.0, 0.1, 1.0]])
    direction = shear / np.linalg.norm(shear, axis=0)  # unit columns, not orthogonal
    volume = lesion_volume(shape=(5, 64, 64))
    volume[[0, 4]] = 20  # the lesion is on slices 1..3
    path = save(volume, tmp_path / "aniso.nrrd", spacing=spacing, direction=direction, origin=(4.0, -2.0, 50.0))
    image = read_image(path)
    centre = (image.ijk_to_ras @ np.array([31.5, 31.5, 2.0, 1.0]))[:3]
    roi_to_ras = np.eye(4)
    roi_to_ras[:3, 3] = centre
    size = (6.0, 5.0, 40.0)  # mm along R, A, S: +/- 20 mm holds only slice 2 of the 30 mm slices
    write_roi_json(tmp_path / "roi.mrk.json", roi_to_ras, size, coordinate_system="RAS")
    expected = brute_force_box(image, roi_to_ras, size)
    assert expected[2] == expected[5] == 2
    out = tmp_path / "out.seg.nrrd"
    status, stdout, err = call(capsys, "segment", path, "--roi", tmp_path / "roi.mrk.json", "-o", out)
    assert status == 0, err
    assert "slice axis: k" in stdout
    assert f"box (i0 j0 k0 i1 j1 k1): {' '.join(map(str, expected))}" in stdout
    written, source = sitk.ReadImage(str(out)), sitk.ReadImage(path)
    assert written.GetSize() == source.GetSize()
    assert np.allclose(written.GetSpacing(), spacing, atol=1e-9)
    assert np.allclose(written.GetDirection(), source.GetDirection(), atol=1e-9)
    assert np.allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-9)
    mask = sitk.GetArrayFromImage(written)
    assert mask[2].any() and not mask[[0, 1, 3, 4]].any()
    i0, j0, _, i1, j1, _ = expected
    assert not mask[2, :j0].any() and not mask[2, j1 + 1 :].any()
    assert not mask[2, :, :i0].any() and not mask[2, :, i1 + 1 :].any()


def brute_force_box(image, roi_to_ras, size):
    """Tight index box of the voxel centres inside the ROI, by testing every one of them."""
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij")
    ras = image.ijk_to_ras @ np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
    local = np.linalg.solve(roi_to_ras, ras)[:3]
    inside = np.all(np.abs(local) <= np.asarray(size)[:, None] / 2 + geometry.INSIDE_TOLERANCE_MM, axis=0)
    k, j, i = np.nonzero(inside.reshape(image.shape))
    return (int(i.min()), int(j.min()), int(k.min()), int(i.max()), int(j.max()), int(k.max()))


def test_cli_roi_of_another_image_is_refused_and_writes_nothing(tmp_path, capsys):
    here = save(lesion_volume(shape=(5, 64, 64)), tmp_path / "here.nrrd", spacing=(0.8, 0.8, 3.0))
    # An ROI drawn on another scan, 500 mm away in RAS (a different patient position / study).
    roi_to_ras = np.eye(4)
    roi_to_ras[:3, 3] = (520.0, 480.0, -300.0)
    write_roi_json(tmp_path / "other.mrk.json", roi_to_ras, (30.0, 30.0, 20.0), coordinate_system="LPS")
    (tmp_path / "out").mkdir()
    roi, out = tmp_path / "other.mrk.json", tmp_path / "out" / "m.nii"
    status, _, err = call(capsys, "segment", here, "--roi", roi, "-o", out)
    assert status == 2
    assert_one_line_error(err)
    assert err.endswith("error: ROI does not overlap the volume\n")
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(
    "array, vector, message",
    [
        (np.ones((3, 4, 5, 6), np.int16), False, "is 4D \\(6x5x4x3\\): a time series"),
        (np.ones((4, 5, 6, 2), np.float32), True, "has 2 values per voxel"),
        (np.full((4, 5, 6), 3, np.int16), False, "is constant \\(3 everywhere\\): nothing to segment"),
    ],
    ids=["time-series", "vector", "constant"],
)
def test_cli_refuses_images_it_cannot_segment_with_status_2(tmp_path, capsys, array, vector, message):
    path = save(array, tmp_path / "in.nrrd", vector=vector)
    (tmp_path / "out").mkdir()
    status, _, err = call(capsys, "segment", path, "--box-ijk", 0, 0, 0, 3, 3, 0, "-o", tmp_path / "out" / "m.nrrd")
    assert status == 2
    assert_one_line_error(err)
    assert re.search(message, err), err
    assert os.listdir(tmp_path / "out") == []


# -- weights of the wrong architecture ----------------------------------------------------------------


def test_cli_checkpoint_of_another_network_is_refused_before_anything_is_written(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from MedSAMSegmentLib.model.weights import embedded_litemedsam_path

    small = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}, small)
    image = save(lesion_volume(), tmp_path / "in.nrrd")
    (tmp_path / "out").mkdir()
    for args, title, counts in [
        (["--checkpoint", small], "LiteMedSAM (TinyViT encoder, 256 px)", "2 unexpected keys (fc.weight, fc.bias)"),
        (["--model", "medsam-vit-b", "--checkpoint", embedded_litemedsam_path()],
         "MedSAM (SAM ViT-B encoder, 1024 px)", "shape mismatches"),
    ]:
        status, _, err = call(capsys, "segment", image, "--box-ijk", 16, 18, 1, 47, 45, 1,
                              "-o", tmp_path / "out" / "m.nrrd", "-q", "--device", "cpu", *args)
        assert status == 1, err
        assert_one_line_error(err)
        assert f"{args[-1]} is not a {title} checkpoint" in err and counts in err
        assert os.listdir(tmp_path / "out") == []
    assert small.read_bytes()[:2] == b"PK"  # the checkpoint itself is left alone


# -- folders this process may not write --------------------------------------------------------------

UNPRIVILEGED = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np, SimpleITK
    import http.client, urllib.request, email.parser, hashlib, secrets, contextlib
    from MedSAMSegmentLib import cli, errors
    from MedSAMSegmentLib.fileio import imageio, markups
    from MedSAMSegmentLib.model import download, registry, weights
    cli.build_parser()  # imports what the sub-commands need while the library can still be read
    if os.geteuid() == 0:  # drop root for good: permissions bind only on other users
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    folder = sys.argv[1]
    try:
        open(os.path.join(folder, "probe"), "w").close()
    except PermissionError:
        pass
    else:
        print(json.dumps({"skip": "this user can write in a 0o555 folder"}))
        sys.exit(0)
    """
)


@pytest.fixture
def read_only_folder():
    """A folder nobody but root may write in, reachable by the unprivileged child user."""
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    base = tempfile.mkdtemp(prefix="medsam-ro-")
    os.chmod(base, 0o755)
    folder = os.path.join(base, "ro")
    os.mkdir(folder)
    os.chmod(folder, 0o555)
    try:
        yield folder
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(base)


def run_unprivileged(code, folder, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(LIB_DIR), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", UNPRIVILEGED + textwrap.dedent(code), folder, *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    if "skip" in report:
        pytest.skip(report["skip"])
    return report, result.stderr


def test_no_write_permission_in_the_weights_cache_is_a_download_error(read_only_folder):
    data = b"weights" * 1000
    digest = hashlib.sha256(data).hexdigest()
    with LocalServer() as server:
        url = server.add("/medsam_vit_b.pth", data)
        report, _ = run_unprivileged(
            """
            try:
                weights.resolve_checkpoint("medsam-vit-b", url=sys.argv[2], sha256=sys.argv[3], cache_dir=folder)
            except errors.WeightsError as exc:
                print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
            """,
            read_only_folder, url, digest,
        )
        assert server.requests == []  # refused before downloading a byte
    assert report == {"type": "DownloadError", "message": f"the download folder {read_only_folder} is not writable"}
    assert os.listdir(read_only_folder) == []


def test_no_write_permission_in_the_output_folder_is_refused_everywhere(read_only_folder):
    image = save(lesion_volume(), Path(read_only_folder).parent / "in.nrrd")  # readable by the child user
    report, stderr = run_unprivileged(
        """
        image = imageio.read_image(sys.argv[2])
        mask = np.ones(image.shape, np.uint8)
        found = {}
        for name, write in [
            ("labelmap", lambda: imageio.write_labelmap(os.path.join(folder, "m.nii.gz"), mask, image)),
            ("seg.nrrd",
             lambda: imageio.write_seg_nrrd(os.path.join(folder, "m.seg.nrrd"), mask, image, "L", (1, 0, 0))),
        ]:
            try:
                write()
            except errors.OutputError as exc:
                found[name] = [type(exc).__name__, str(exc)]
        found["cli"] = cli.main(["segment", sys.argv[2], "--box-ijk", "16", "18", "1", "47", "45", "1",
                                 "-o", os.path.join(folder, "m.nrrd")])
        print(json.dumps(found))
        """,
        read_only_folder, image,
    )
    reason = f"cannot write in {read_only_folder}: Permission denied"
    assert report == {"labelmap": ["OutputError", reason], "seg.nrrd": ["OutputError", reason], "cli": 2}
    assert stderr == f"medsam-segment: error: {reason}\n"  # the CLI refuses before reading or running anything
    assert os.listdir(read_only_folder) == []


# -- hostile command lines: checked before any model work ---------------------------------------------
# Several tests pass a checkpoint that does not exist: a refusal with status 2 then proves the check
# ran before the weights were loaded (loading them would fail with status 1).

ONE_SLICE_BOX = (16, 18, 1, 47, 45, 1)


@pytest.fixture
def lesion_file(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return save(lesion_volume(), tmp_path / "in" / "x.nrrd")


def refused(capsys, *args, status=2):
    """Run the CLI, expect one error line and that status; return the error line."""
    code, _, err = call(capsys, *args)
    assert code == status, err
    assert_one_line_error(err)
    return err


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hard-link"])
def test_the_output_is_never_the_input_even_with_overwrite(tmp_path, capsys, lesion_file, spelling):
    before = Path(lesion_file).read_bytes()
    output = {
        "same": lesion_file,
        "dotted": str(tmp_path / "in" / ".." / "in" / "." / "x.nrrd"),
        "symlink": str(tmp_path / "out" / "link.nrrd"),
        "hard-link": str(tmp_path / "out" / "hard.nrrd"),
    }[spelling]
    if spelling == "symlink":
        os.symlink(lesion_file, output)
    if spelling == "hard-link":
        os.link(lesion_file, output)
    err = refused(capsys, "segment", lesion_file, "--box-ijk", *ONE_SLICE_BOX, "-o", output, "--overwrite",
                  "--checkpoint", tmp_path / "none.pth")
    assert f"output {output} is the input {lesion_file}" in err and "never an input" in err
    assert Path(lesion_file).read_bytes() == before


def test_same_file_tells_links_from_other_files(tmp_path):
    a, b = tmp_path / "a.nrrd", tmp_path / "b.nrrd"
    a.write_bytes(b"a")
    b.write_bytes(b"a")
    os.link(a, tmp_path / "hard.nrrd")
    assert imageio.same_file(a, tmp_path / "hard.nrrd") and imageio.same_file(a, tmp_path / "." / "a.nrrd")
    assert not imageio.same_file(a, b) and not imageio.same_file(a, tmp_path / "missing.nrrd")
    imageio.check_not_an_input(b, [a, None])
    with pytest.raises(OutputError, match="is the input"):
        imageio.check_not_an_input(tmp_path / "hard.nrrd", [b, a])


@pytest.mark.parametrize(
    "window, message",
    [
        (("1e6", "10"), r"window 1e\+06/10 \(\[999995, 1e\+06\]\) lies wholly above the image's range \[20, 90\]"),
        (("-1000000", "10"), r"lies wholly below the image's range \[20, 90\]"),
        (("1.7e308", "1.7e308"), r"window 1.7e\+308/1.7e\+308 reaches beyond the largest float"),
        (("100", "1e-300"), r"window width 1e-300 is too small for level 100: the window collapses to one value"),
    ],
    ids=["above", "below", "beyond-float", "tiny-width"],
)
def test_an_explicit_window_without_contrast_is_refused_with_a_hint(tmp_path, capsys, lesion_file, window, message):
    err = refused(capsys, "segment", lesion_file, "--box-ijk", *ONE_SLICE_BOX, "-o", tmp_path / "out" / "m.nrrd",
                  "--window", *window, "--checkpoint", tmp_path / "none.pth")
    assert re.search(message, err), err
    assert err.endswith("(--window LEVEL WIDTH, or --modality CT|MR)\n")
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("kind", ["binary", "nearly-constant"])
def test_images_the_automatic_window_cannot_show_get_an_honest_message(tmp_path, capsys, kind):
    if kind == "binary":
        volume = lesion_volume(np.uint8, background=0, lesion=1)
    else:  # one voxel in 8192 differs: the 0.5-99.5 percentiles are equal
        volume = np.full((2, 64, 64), 500, np.int16)
        volume[0, 0, 0] = 501
    path = save(volume, tmp_path / "in.nrrd")
    (tmp_path / "out").mkdir()
    err = refused(capsys, "segment", path, "--box-ijk", *ONE_SLICE_BOX, "-o", tmp_path / "out" / "m.nrrd",
                  "--checkpoint", tmp_path / "none.pth")
    assert "has no width on this image" in err and "binary, a label map or nearly constant" in err
    assert "does not overlap" not in err and "(--window LEVEL WIDTH, or --modality CT|MR)" in err
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--color", "nan", "0", "0", "--checkpoint", "{tmp}/none.pth"], "--color nan 0 0: channels must be 0-1 or 0-255"),
        (["--weights-url", "https://example.org/w.pth", "--weights-sha256", "0" * 64],
         "--weights-url: the litemedsam weights are embedded, nothing is downloaded; pass --checkpoint PATH"),
        (["--model", "medsam-vit-b", "--weights-url", "https://example.org/w.pth", "--weights-sha256", "0" * 64,
          "--checkpoint", "{tmp}/none.pth"], "--weights-url and --checkpoint exclude each other"),
        (["-o", "{tmp}/out/" + "m" * 300 + ".nrrd", "--checkpoint", "{tmp}/none.pth"],
         "is 305 bytes long; this file system allows at most 255"),
    ],
    ids=["colour-nan", "url-with-embedded-model", "url-with-checkpoint", "name-too-long"],
)
def test_options_that_would_fail_late_or_be_ignored_are_refused_first(tmp_path, capsys, lesion_file, extra, message):
    args = ["segment", lesion_file, "--box-ijk", *ONE_SLICE_BOX, "-o", tmp_path / "out" / "m.seg.nrrd", "-q"]
    err = refused(capsys, *args, *[a.format(tmp=tmp_path) for a in extra])
    assert message in err
    assert os.listdir(tmp_path / "out") == []


def test_a_checksum_given_with_the_embedded_weights_is_applied(tmp_path, capsys, lesion_file):
    err = refused(capsys, "segment", lesion_file, "--box-ijk", *ONE_SLICE_BOX, "-o", tmp_path / "out" / "m.nrrd",
                  "--weights-sha256", "0" * 64, "--device", "cpu", status=1)
    assert "lite_medsam.pth failed its checksum" in err and f"expected {'0' * 64}" in err
    assert os.listdir(tmp_path / "out") == []


def test_a_long_output_name_that_fits_is_written(tmp_path, capsys, lesion_file):
    name = "m" * (250 - len(".nii.gz")) + ".nii.gz"  # 250 bytes: the old temporary name had 266
    status, _, err = call(capsys, "segment", lesion_file, "--box-ijk", *ONE_SLICE_BOX, "-o", tmp_path / "out" / name,
                          "-q", "--device", "cpu")
    assert status == 0, err
    assert os.listdir(tmp_path / "out") == [name]
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / name)))[1].any()


def test_a_deeply_nested_roi_file_is_an_input_error(tmp_path, capsys, lesion_file):
    roi = tmp_path / "deep.mrk.json"
    roi.write_text('{"markups": ' + "[" * 200_000 + "]" * 200_000 + "}")
    err = refused(capsys, "segment", lesion_file, "--roi", roi, "-o", tmp_path / "out" / "m.nrrd")
    assert err.endswith(f"cannot read {roi} as a markups JSON file: it is nested too deeply\n")


@pytest.mark.parametrize("size", [1e300, 1.7e308])
def test_a_huge_roi_is_clipped_to_the_volume_without_warnings(tmp_path, capsys, lesion_file, size):
    image = read_image(lesion_file)
    roi_to_ras = np.eye(4)
    roi_to_ras[:3, 3] = (image.ijk_to_ras @ np.array([5.0, 5.0, 0.0, 1.0]))[:3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        box = geometry.roi_index_box(roi_to_ras, (size,) * 3, image.ras_to_ijk, image.shape)
    assert box == (0, 0, 0, 63, 63, 1)
    write_roi_json(tmp_path / "huge.mrk.json", roi_to_ras, (size,) * 3)
    status, out, err = call(capsys, "segment", lesion_file, "--roi", tmp_path / "huge.mrk.json",
                            "-o", tmp_path / "out" / "m.nrrd", "--checkpoint", tmp_path / "none.pth")
    assert status == 1 and "none.pth" in err and "Warning" not in err  # it got as far as the weights
    assert "box (i0 j0 k0 i1 j1 k1): 0 0 0 63 63 1" in out


def test_a_dicom_folder_any_folder_or_a_pipe_as_the_image_says_what_it_is(tmp_path, capsys):
    dicom = tmp_path / "series"
    dicom.mkdir()
    for n in range(3):  # the DICOM preamble: 128 bytes, then "DICM"
        (dicom / f"IM{n:04d}").write_bytes(bytes(128) + b"DICM" + bytes(64))
    (tmp_path / "empty").mkdir()
    (tmp_path / "out").mkdir()
    cases = [(dicom, "is a folder of DICOM files: DICOM series are not supported yet"),
             (tmp_path / "empty", "is a folder: give the image file itself")]
    if hasattr(os, "mkfifo"):  # opening a pipe nobody writes would wait forever
        os.mkfifo(tmp_path / "pipe")
        cases.append((tmp_path / "pipe", "is not a regular file"))
    for folder, message in cases:
        err = refused(capsys, "segment", folder, "--box-ijk", *ONE_SLICE_BOX, "-o", tmp_path / "out" / "m.nrrd")
        assert f"{folder} {message}" in err
    assert os.listdir(tmp_path / "out") == []


# -- the demo replaces only its own files ---------------------------------------------------------------


@pytest.mark.parametrize("name", [SEGMENTATION_NAME, OVERLAY_NAME])
def test_the_demo_never_replaces_a_file_it_did_not_write(tmp_path, capsys, name):
    (tmp_path / name).write_bytes(b"my own work")
    err = refused(capsys, "demo", "--output-dir", tmp_path, "-q")
    assert f"{tmp_path / name} exists and was not written by the demo" in err and "--output-dir" in err
    assert (tmp_path / name).read_bytes() == b"my own work" and os.listdir(tmp_path) == [name]


def test_the_demo_marks_its_files_and_may_replace_them(tmp_path, capsys):
    from MedSAMSegmentLib.demo import MARK_KEY, MARK_VALUE, check_output_dir

    image = read_image(save(lesion_volume(), tmp_path / "in.nrrd"))
    folder = tmp_path / "demo"
    folder.mkdir()
    seg, png = folder / SEGMENTATION_NAME, folder / OVERLAY_NAME
    imageio.write_seg_nrrd(seg, lesion_volume(np.uint8, 0, 1), image, "T", (1, 0, 0), fields={MARK_KEY: MARK_VALUE})
    overlay.write_png(png, np.zeros((8, 8, 3), np.uint8), text={MARK_KEY: MARK_VALUE})
    assert imageio.nrrd_header_field(seg, MARK_KEY) == MARK_VALUE and overlay.read_png_text(png) == {MARK_KEY: MARK_VALUE}
    assert sitk.ReadImage(str(png)).GetSize() == (8, 8) and sitk.ReadImage(str(seg)).GetSize() == (64, 64, 2)
    assert check_output_dir(str(folder)) == [str(seg), str(png)]  # marked: the demo may replace them
    err = refused(capsys, "demo", "--output-dir", tmp_path / "in.nrrd")  # a file, not a folder: 2 as in segment
    assert "is not a folder" in err


# -- the MRML API: inside-out ROIs, missing nodes, labelmap volumes ------------------------------------------


def test_an_inside_out_roi_is_refused_by_the_cli_and_the_api_alike(tmp_path, capsys, lesion_file, slicer_core):
    from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic

    roi_to_ras = np.eye(4)
    write_roi_json(tmp_path / "roi.mrk.json", roi_to_ras, (20.0, 20.0, 2.0))
    document = json.loads((tmp_path / "roi.mrk.json").read_text())
    document["markups"][0]["insideOut"] = True
    (tmp_path / "roi.mrk.json").write_text(json.dumps(document))
    err = refused(capsys, "segment", lesion_file, "--roi", tmp_path / "roi.mrk.json", "-o", tmp_path / "out" / "m.nrrd")
    assert err.endswith(f"{tmp_path / 'roi.mrk.json'}: {geometry.INSIDE_OUT_ROI}\n")

    volume = slicer_core.addVolume(lesion_volume(), np.eye(4), "lesion")
    roi = slicer_core.addRoi((30.0, 30.0, 0.5), (20.0, 20.0, 2.0), name="Box")
    roi.SetInsideOut(True)
    with pytest.raises(InputError) as refusal:
        MedSAMLogic(predictor=shared_predictor()).prepare(volume, roi)
    assert str(refusal.value) == f"ROI 'Box': {geometry.INSIDE_OUT_ROI}"


def test_every_public_logic_call_names_a_missing_node(tmp_path, slicer_core):
    from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic

    logic = MedSAMLogic(predictor=shared_predictor())
    volume = slicer_core.addVolume(lesion_volume(), np.eye(4), "lesion")
    roi = slicer_core.addRoi((30.0, 30.0, 0.5), (20.0, 20.0, 2.0))
    segmentation = slicer_core.addSegmentation()
    mask = np.zeros((2, 64, 64), np.uint8)
    encoded = logic.predictor.encoded
    for call_with_none, argument in [
        (lambda: logic.segment(None, roi, segmentation, "T"), "volumeNode"),
        (lambda: logic.segment(volume, None, segmentation, "T"), "roiNode"),
        (lambda: logic.segment(volume, roi, None, "T"), "segmentationNode"),
        (lambda: logic.prepare(None, roi), "volumeNode"),
        (lambda: logic.computeMask(None, roi), "volumeNode"),
        (lambda: logic.segmentSlice(None, "k", 0, (16, 18, 47, 45)), "volumeNode"),
        (lambda: logic.segmentSlice(volume, "k", 0, None), "box"),
        (lambda: logic.writeMaskToSegment(mask, None, segmentation), "volumeNode"),
        (lambda: logic.writeMaskToSegment(mask, volume, None), "segmentationNode"),
        (lambda: logic.applyWithEditorLogic(None, mask, volume), "editorLogic"),
        (lambda: logic.saveSegmentation(None, tmp_path / "s.seg.nrrd"), "segmentationNode"),
    ]:
        with pytest.raises(InputError, match=f"^{argument} must be .*, got None$"):
            call_with_none()
    assert logic.predictor.encoded == encoded and segmentation.GetSegmentation().GetNumberOfSegments() == 0
    assert os.listdir(tmp_path) == []


def test_a_binary_labelmap_volume_node_says_it_is_a_labelmap(slicer_core):
    import slicer
    import slicercore

    from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic

    with slicer_core.installed():
        labels = slicer.util.addVolumeFromArray(lesion_volume(np.uint8, 0, 1), slicercore.toVtkMatrix(np.eye(4)),
                                                name="Labels", nodeClassName="vtkMRMLLabelMapVolumeNode")
    roi = slicer_core.addRoi((31.5, 31.5, 0.5), (40.0, 40.0, 2.0))
    logic = MedSAMLogic(predictor=shared_predictor())
    with pytest.raises(InputError) as refusal:
        logic.computeMask(labels, roi)
    message = str(refusal.value)
    assert message.startswith("Volume 'Labels' is a labelmap (segment labels, not intensities): ")
    assert "has no width on this image" in message and "segment the grey-level volume" in message


# -- files this user may not read ----------------------------------------------------------------------


def test_an_unreadable_input_says_permission_denied(read_only_folder):
    base = Path(read_only_folder).parent
    image = save(lesion_volume(), base / "locked.nrrd")
    os.chmod(image, 0o000)
    hidden = base / "private"
    hidden.mkdir()
    os.chmod(hidden, 0o700)  # root's: the child user may not look inside
    inner = save(lesion_volume(), hidden / "x.nrrd")
    for name in ("roi.mrk.json", "weights.pth"):
        (base / name).write_text("{}")
        os.chmod(base / name, 0o000)
    report, _ = run_unprivileged(
        """
        found = {}
        for name, read in [("image", lambda: imageio.read_image(sys.argv[2])),
                           ("hidden", lambda: imageio.read_image(sys.argv[3])),
                           ("roi", lambda: markups.read_roi_json(sys.argv[4])),
                           ("weights", lambda: weights.verify_checkpoint_file(sys.argv[5]))]:
            try:
                read()
            except (errors.InputError, errors.WeightsError) as exc:
                found[name] = str(exc)
        print(json.dumps(found))
        """,
        read_only_folder, image, inner, base / "roi.mrk.json", base / "weights.pth",
    )
    assert report == {
        "image": f"cannot read {image}: permission denied",
        "hidden": f"cannot read {inner}: permission denied (on a folder above it)",
        "roi": f"cannot read {base / 'roi.mrk.json'}: permission denied",
        "weights": f"cannot read checkpoint {base / 'weights.pth'}: permission denied",
    }
