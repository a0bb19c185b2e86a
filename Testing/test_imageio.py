"""imageio: reading into (K, J, I) + RAS geometry, refusals, and safe writes in the input's geometry."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSAMSegmentLib.errors import InputError, OutputError
from MedSAMSegmentLib.fileio.imageio import Image, read_image, write_labelmap, write_seg_nrrd

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
LIB_DIR = Path(__file__).resolve().parent.parent / "MedSAMSegment"  # the code under test, in child processes


def oblique_direction():
    """A rotation about a skew axis, with the k axis flipped: nothing lines up with LPS."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    angle = 0.7
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    return rotation @ np.diag([1.0, 1.0, -1.0])


def make_image(array_kji, direction=None, spacing=(0.8, 1.1, 2.5), origin=(-12.5, 30.25, 7.0), vector=False):
    img = sitk.GetImageFromArray(array_kji, isVector=vector)
    dim = img.GetDimension()
    img.SetSpacing((tuple(spacing) + (1.0,))[:dim])
    img.SetOrigin((tuple(origin) + (0.0,))[:dim])
    if direction is not None:
        img.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    return img


def save(img, path):
    sitk.WriteImage(img, str(path))
    return str(path)


def ramp(shape=(6, 7, 8), dtype=np.int16):
    return (np.arange(np.prod(shape)) % 97).reshape(shape).astype(dtype)


def assert_same_geometry(a, b, atol=1e-6):
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=atol)
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=atol)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=atol)


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd"])
def test_oblique_volume_reads_with_itk_geometry_in_ras(tmp_path, extension):
    path = save(make_image(ramp(), oblique_direction()), tmp_path / f"in{extension}")
    image = read_image(path)
    on_disk = sitk.ReadImage(path)
    assert image.shape == (6, 7, 8)
    assert np.array_equal(image.array, sitk.GetArrayFromImage(on_disk))
    for ijk in [(0, 0, 0), (7, 0, 0), (0, 6, 5), (3, 4, 2)]:
        ras = image.ijk_to_ras @ [*ijk, 1.0]
        assert np.allclose(ras[:3], LPS_TO_RAS @ on_disk.TransformIndexToPhysicalPoint(ijk), atol=1e-6)
        assert np.allclose(image.ras_to_ijk @ ras, [*ijk, 1.0], atol=1e-9)


@pytest.mark.parametrize("in_ext", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("out_ext", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_labelmap_round_trip_keeps_the_input_geometry(tmp_path, in_ext, out_ext):
    path = save(make_image(ramp(), oblique_direction()), tmp_path / f"in{in_ext}")
    image = read_image(path)
    mask = np.zeros(image.shape, np.uint8)
    mask[1:4, 2:6, 3:7] = 1
    out = tmp_path / f"mask{out_ext}"
    write_labelmap(out, mask, image)
    written = sitk.ReadImage(str(out))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert_same_geometry(written, sitk.ReadImage(path))
    assert np.array_equal(sitk.GetArrayFromImage(written), mask)
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(path), out.name])  # no temp left


def test_non_orthogonal_direction_is_carried_through(tmp_path):
    sheared = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.1, 0.0, 1.0]])
    sheared /= np.linalg.norm(sheared, axis=0)
    path = save(make_image(ramp(), sheared), tmp_path / "in.nrrd")
    image = read_image(path)
    assert np.allclose(image.direction, sheared, atol=1e-9)
    write_labelmap(tmp_path / "out.nrrd", np.ones(image.shape, np.uint8), image)
    assert_same_geometry(sitk.ReadImage(str(tmp_path / "out.nrrd")), sitk.ReadImage(path), atol=1e-9)


def test_2d_image_becomes_one_slice_and_is_written_back_2d(tmp_path):
    path = save(make_image(ramp((7, 8)), [[0.0, 1.0], [1.0, 0.0]]), tmp_path / "in.nrrd")
    image = read_image(path)
    assert image.shape == (1, 7, 8) and image.dimension == 2
    assert np.array_equal(image.array[0], ramp((7, 8)))
    mask = np.zeros(image.shape, np.uint8)
    mask[0, 2:5, 1:3] = 1
    write_labelmap(tmp_path / "out.nrrd", mask, image)
    written = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert written.GetDimension() == 2
    assert_same_geometry(written, sitk.ReadImage(path))
    assert np.array_equal(sitk.GetArrayFromImage(written), mask[0])


def test_time_series_is_refused_with_its_size(tmp_path):
    path = save(make_image(ramp((3, 5, 6, 7))), tmp_path / "series.nii.gz")
    with pytest.raises(InputError, match="4D \\(7x6x5x3\\)"):
        read_image(path)


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd", ".mha"])
def test_single_time_point_4d_file_is_read_as_3d(tmp_path, extension):
    path = save(make_image(ramp((1, 5, 6, 7))), tmp_path / f"one{extension}")
    image = read_image(path)
    assert image.shape == (5, 6, 7)
    assert np.array_equal(image.array, ramp((5, 6, 7)))
    if sitk.ReadImage(path).GetDimension() == 4:  # the NIfTI reader already drops the unit axis
        assert any("single time point" in note for note in image.notes)


def test_rgb_becomes_luminance(tmp_path):
    rgb = np.zeros((4, 5, 6, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[1:3, :, :, 1] = 100
    rgb[:, 2:, :, 2] = 50
    path = save(make_image(rgb, vector=True), tmp_path / "colour.nrrd")
    image = read_image(path)
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert image.shape == (4, 5, 6)
    assert np.allclose(image.array, expected, atol=1e-3)
    assert any("luminance" in note for note in image.notes)


def test_other_vector_images_are_refused(tmp_path):
    path = save(make_image(ramp((4, 5, 6, 5)).astype(np.float32), vector=True), tmp_path / "vectors.nrrd")
    with pytest.raises(InputError, match="5 values per voxel"):
        read_image(path)


@pytest.mark.parametrize(
    "dtype",
    [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64],
)
def test_every_integer_and_float_type_is_read_unchanged(tmp_path, dtype):
    array = ramp(dtype=dtype)
    image = read_image(save(make_image(array), tmp_path / "in.nrrd"))
    assert image.array.dtype == np.dtype(dtype)
    assert np.array_equal(image.array, array)


def test_nan_and_inf_voxels_are_kept_for_the_engine(tmp_path):
    array = ramp(dtype=np.float32)
    array[0, 0, :3] = [np.nan, np.inf, -np.inf]
    image = read_image(save(make_image(array), tmp_path / "in.nrrd"))
    assert np.array_equal(image.array, array, equal_nan=True)


@pytest.mark.parametrize(
    "array, reason",
    [
        (np.full((3, 4, 5), 7, np.int16), "constant \\(7 everywhere\\)"),
        (np.where(np.arange(60).reshape(3, 4, 5) % 2, np.nan, 2.5).astype(np.float32), "constant \\(2.5"),
        (np.full((3, 4, 5), np.nan, np.float32), "no finite voxel values"),
    ],
)
def test_images_with_nothing_to_segment_are_refused(tmp_path, array, reason):
    with pytest.raises(InputError, match=reason):
        read_image(save(make_image(array), tmp_path / "flat.nrrd"))


def test_missing_and_non_image_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nothing.nrrd")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "notes.txt")


def test_mask_of_another_shape_is_refused_before_writing(tmp_path):
    image = read_image(save(make_image(ramp()), tmp_path / "in.nrrd"))
    with pytest.raises(InputError, match="shape"):
        write_labelmap(tmp_path / "out.nrrd", np.zeros((2, 2, 2), np.uint8), image)
    assert not (tmp_path / "out.nrrd").exists()


# -- output safety -----------------------------------------------------------------------------


@pytest.fixture
def small_image(tmp_path):
    return read_image(save(make_image(ramp()), tmp_path / "in.nrrd"))


@pytest.mark.parametrize("name", ["out.nii.gz", "out.seg.nrrd"])
def test_existing_output_is_kept_unless_overwrite(tmp_path, small_image, name):
    out = tmp_path / name
    out.write_bytes(b"precious")
    mask = np.ones(small_image.shape, np.uint8)

    def write(**kwargs):
        if name.endswith(".seg.nrrd"):
            write_seg_nrrd(out, mask, small_image, "Tumour", (1, 0, 0), **kwargs)
        else:
            write_labelmap(out, mask, small_image, **kwargs)

    with pytest.raises(OutputError, match="exists"):
        write()
    assert out.read_bytes() == b"precious"
    write(overwrite=True)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.nrrd", name])


def test_unwritable_destinations_are_output_errors(tmp_path, small_image):
    mask = np.ones(small_image.shape, np.uint8)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="does not exist"):
        write_labelmap(tmp_path / "missing" / "out.nrrd", mask, small_image)
    with pytest.raises(OutputError, match="is not a folder"):
        write_labelmap(tmp_path / "a-file" / "out.nrrd", mask, small_image)
    (tmp_path / "folder.nrrd").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        write_labelmap(tmp_path / "folder.nrrd", mask, small_image, overwrite=True)
    with pytest.raises(InputError, match="extension"):
        write_labelmap(tmp_path / "out.png", mask, small_image)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions don't bind root")
def test_read_only_folder_is_an_output_error(tmp_path, small_image):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            write_labelmap(folder / "out.nrrd", np.ones(small_image.shape, np.uint8), small_image)
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses RLIMIT_FSIZE")
def test_full_disk_leaves_no_file_in_any_format(tmp_path):
    # A real failing write, not a mock: the child may write at most 20 kB per file, as on a
    # nearly full disk. ITK's NIfTI writer only prints such errors, so this also proves the
    # read-back check.
    script = textwrap.dedent(
        """
        import os, resource, signal, sys
        import numpy as np
        from MedSAMSegmentLib.errors import OutputError
        from MedSAMSegmentLib.fileio.imageio import Image, write_labelmap, write_seg_nrrd
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        folder = sys.argv[1]
        image = Image(np.zeros((40, 64, 64), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
        mask = (np.random.default_rng(0).random(image.shape) > 0.5).astype(np.uint8)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
        for name in ("out.nii", "out.nii.gz", "out.nrrd", "out.mha", "out.seg.nrrd"):
            path = os.path.join(folder, name)
            try:
                if name.endswith(".seg.nrrd"):
                    write_seg_nrrd(path, mask, image, "Tumour", (1, 0, 0))
                else:
                    write_labelmap(path, mask, image)
            except OutputError as exc:
                print("refused", name, exc)
            else:
                print("WROTE", name)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(LIB_DIR), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    # Every format names the reason, not a reader error about the temporary file.
    assert result.stdout.splitlines() == [
        f"refused {name} cannot write {tmp_path / name}: file too large (this process may write files of at most "
        "20000 bytes)"
        for name in ("out.nii", "out.nii.gz", "out.nrrd", "out.mha", "out.seg.nrrd")
    ]
    assert os.listdir(tmp_path) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 kB tmpfs: a real full disk (needs the right to mount; skipped otherwise)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("name", ["out.nii", "out.nii.gz", "out.nrrd", "out.mha", "out.seg.nrrd"])
def test_a_full_disk_is_named_as_such_in_every_format(tiny_disk, name):
    image = Image(np.zeros((40, 128, 128), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    mask = (np.random.default_rng(0).random(image.shape) > 0.5).astype(np.uint8)  # ~80 kB even compressed
    path = tiny_disk / name
    with pytest.raises(OutputError) as info:
        if name.endswith(".seg.nrrd"):
            write_seg_nrrd(path, mask, image, "Tumour", (1, 0, 0))
        else:
            write_labelmap(path, mask, image)
    assert str(info.value) == f"cannot write {path}: disk full"
    assert os.listdir(tiny_disk) == []


# -- .seg.nrrd read by Slicer itself -------------------------------------------------------------


def load_in_slicer(core, messages, path):
    """Slicer's own reader (slicer-core fixtures from conftest.py); no VTK error allowed."""
    node = core.segmentationsLogic.LoadSegmentationFromFile(str(path), False, "loaded")
    assert node is not None, messages.errors
    assert not messages.errors, messages.errors
    return node


def segment_voxels(node, segment_id, shape_kji):
    """The segment as a full-extent (K, J, I) array, plus its image-to-RAS matrix."""
    import slicer
    import vtk
    from vtkmodules.util import numpy_support

    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    full = np.zeros(shape_kji, np.uint8)
    i0, i1, j0, j1, k0, k1 = labelmap.GetExtent()
    if i0 <= i1 and j0 <= j1 and k0 <= k1:
        scalars = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        full[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = scalars.reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    return full, np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_seg_nrrd_loads_in_slicer_with_name_colour_voxels_and_geometry(tmp_path, slicer_core, vtk_messages):
    image = read_image(save(make_image(ramp((9, 10, 11)), oblique_direction()), tmp_path / "in.nii.gz"))
    mask = np.zeros(image.shape, np.uint8)
    mask[2:6, 3:8, 4:9] = 1
    mask[4, 5, 6] = 0
    out = tmp_path / "tumour.seg.nrrd"
    write_seg_nrrd(out, mask, image, "Tumour 1", (0.9, 0.25, 0.1), tags={"MedSAMSegment.Model": "litemedsam"})
    node = load_in_slicer(slicer_core, vtk_messages, out)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == "Tumour 1"
    assert np.allclose(segment.GetColor(), (0.9, 0.25, 0.1))
    assert segmentation.GetSourceRepresentationName() == "Binary labelmap"
    voxels, image_to_ras = segment_voxels(node, segmentation.GetNthSegmentID(0), image.shape)
    assert np.array_equal(voxels, mask)
    assert np.allclose(image_to_ras, image.ijk_to_ras, atol=1e-5)
    geometry = segmentation.GetConversionParameter("Reference image geometry")
    assert np.allclose([float(v) for v in geometry.split(";")[:16]], image.ijk_to_ras.ravel(), atol=1e-9)


def test_empty_seg_nrrd_loads_as_an_empty_segment(tmp_path, slicer_core, vtk_messages):
    image = read_image(save(make_image(ramp()), tmp_path / "in.nrrd"))
    out = tmp_path / "empty.seg.nrrd"
    write_seg_nrrd(out, np.zeros(image.shape, np.uint8), image, "Nothing", (0, 1, 0))
    node = load_in_slicer(slicer_core, vtk_messages, out)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    assert segmentation.GetNthSegment(0).GetName() == "Nothing"
    voxels, _ = segment_voxels(node, segmentation.GetNthSegmentID(0), image.shape)
    assert not voxels.any()


def test_seg_nrrd_refuses_bad_names_and_colours(tmp_path, small_image):
    mask = np.ones(small_image.shape, np.uint8)
    with pytest.raises(InputError, match="name"):
        write_seg_nrrd(tmp_path / "a.seg.nrrd", mask, small_image, "two\nlines", (1, 0, 0))
    with pytest.raises(InputError, match="colour"):
        write_seg_nrrd(tmp_path / "a.seg.nrrd", mask, small_image, "ok", (255, 0, 0))
    with pytest.raises(InputError, match=".seg.nrrd"):
        write_seg_nrrd(tmp_path / "a.nrrd", mask, small_image, "ok", (1, 0, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]
