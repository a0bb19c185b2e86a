"""`medsam-segment` end to end on the shipped sample with the real LiteMedSAM, and its failure rules:
exit 2 for usage/input errors, 1 otherwise, one line on stderr, never a partial or replaced output."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cli_support import assert_one_line_error, call
from MedSAMSegmentLib.demo import SAMPLE_IMAGE, SAMPLE_LABEL, dice, official_box
from MedSAMSegmentLib.fileio.imageio import read_image
from MedSAMSegmentLib.fileio.markups import write_roi_json
from MedSAMSegmentLib.overlay import display_flips

LIB_DIR = Path(__file__).resolve().parent.parent / "MedSAMSegment"
# Three slices through the lesion (the official prompt's in-plane box on k = 13..15): a few seconds.
BOX = (189, 95, 13, 208, 111, 15)
ONE_SLICE = (189, 95, 14, 208, 111, 14)


def run_cli(*args, limit_fsize=None):
    """The CLI in a child process, as a user runs it; optionally with a per-file size limit."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(LIB_DIR), os.environ.get("PYTHONPATH", "")]))
    prelude = ""
    if limit_fsize:
        prelude = textwrap.dedent(
            f"""
            import resource, signal
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_fsize}, resource.RLIM_INFINITY))
            """
        )
    code = prelude + "import sys\nfrom MedSAMSegmentLib.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def reference():
    return (read_image(SAMPLE_LABEL).array > 0).astype(np.uint8)


# -- end to end with the real model --------------------------------------------------------------


def test_segment_writes_a_labelmap_in_the_input_geometry(tmp_path, reference):
    out = tmp_path / "tumour.nii.gz"
    result = run_cli("segment", SAMPLE_IMAGE, "--box-ijk", *BOX, "--output", out)
    assert result.returncode == 0, result.stderr
    assert "slice axis: k" in result.stdout and "MR percentiles" in result.stdout
    assert "segmenting: 3/3" in result.stderr  # progress is visible in a log too
    written, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(SAMPLE_IMAGE))
    assert written.GetSize() == source.GetSize()
    assert np.allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
    assert np.allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-6)
    assert np.allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    mask = sitk.GetArrayFromImage(written)
    k0, k1 = BOX[2], BOX[5]
    assert not mask[:k0].any() and not mask[k1 + 1 :].any()  # never outside the box's slices
    assert dice(mask[k0 : k1 + 1], reference[k0 : k1 + 1]) > 0.3


def roi_of_box(image, box):
    """An ROI along the image axes whose faces lie half a voxel outside the box's voxel centres."""
    lo, hi = np.array(box[:3], float), np.array(box[3:], float)
    ijk_to_ras = image.ijk_to_ras
    object_to_ras = np.eye(4)
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    object_to_ras[:3, :3] = ijk_to_ras[:3, :3] / spacing
    object_to_ras[:3, 3] = (ijk_to_ras @ np.r_[(lo + hi) / 2, 1.0])[:3]
    return object_to_ras, (hi - lo + 1) * spacing


def test_roi_files_in_lps_and_ras_give_the_mask_of_the_equivalent_box(tmp_path, capsys):
    image = read_image(SAMPLE_IMAGE)
    masks = {}
    for system in ("LPS", "RAS"):
        roi = tmp_path / f"{system}.mrk.json"
        write_roi_json(roi, *roi_of_box(image, ONE_SLICE), coordinate_system=system)
        status, out, err = call(capsys, "segment", SAMPLE_IMAGE, "--roi", roi, "-o", tmp_path / f"{system}.nrrd")
        assert status == 0, err
        assert f"box (i0 j0 k0 i1 j1 k1): {' '.join(map(str, ONE_SLICE))}" in out
        masks[system] = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{system}.nrrd")))
    out = tmp_path / "box.seg.nrrd"
    status, _, err = call(
        capsys, "segment", SAMPLE_IMAGE, "--box-ijk", *ONE_SLICE, "-o", out,
        "--name", "Lesion", "--color", "255", "128", "0", "--quiet",
    )
    assert status == 0 and err == ""
    box_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert box_mask.any()
    assert np.array_equal(masks["LPS"], box_mask) and np.array_equal(masks["RAS"], box_mask)
    header = sitk.ReadImage(str(out))
    assert header.GetMetaData("Segment0_Name") == "Lesion"
    colour = [float(v) for v in header.GetMetaData("Segment0_Color").split()]
    assert np.allclose(colour, (1.0, 128 / 255, 0.0), atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses RLIMIT_FSIZE")
def test_full_disk_after_segmenting_fails_with_status_1_and_no_file(tmp_path):
    # Writes of more than 2 kB fail, as on a full disk; the model runs first (nothing to check earlier).
    out = tmp_path / "tumour.nii"
    result = run_cli("segment", SAMPLE_IMAGE, "--box-ijk", *ONE_SLICE, "-o", out, "-q", limit_fsize=2000)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert "cannot write" in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_demo_writes_its_files_and_scores_both_propagation_modes(tmp_path):
    result = run_cli("demo", "--output-dir", tmp_path / "demo", "--quiet")
    assert result.returncode == 0, result.stderr
    scores = {
        line.split()[0]: float(line.split("Dice ")[1].split()[0])
        for line in result.stdout.splitlines() if "propagation: Dice" in line
    }
    assert set(scores) == {"default", "official"}
    assert 0.4 < scores["official"] < 0.5  # the official procedure on this lesion (0.43 on the j-flipped copy)
    assert scores["default"] > 0.4
    names = sorted(os.listdir(tmp_path / "demo"))
    assert names == ["brain1_overlay.png", "brain1_tumour.seg.nrrd"]
    png = sitk.ReadImage(str(tmp_path / "demo" / "brain1_overlay.png"))
    assert png.GetNumberOfComponentsPerPixel() == 3 and png.GetSize()[0] > 400


# -- failures: checked before the model runs, so these are quick --------------------------------


def test_existing_output_is_refused_with_status_2_and_left_byte_for_byte(tmp_path, capsys):
    out = tmp_path / "tumour.seg.nrrd"
    out.write_bytes(b"an earlier result")
    status, _, err = call(capsys, "segment", SAMPLE_IMAGE, "--box-ijk", *BOX, "-o", out)
    assert status == 2
    assert_one_line_error(err)
    assert "--overwrite" in err
    assert out.read_bytes() == b"an earlier result"


@pytest.mark.parametrize(
    "box, reason",
    [
        ((208, 95, 13, 189, 111, 15), "inverted"),
        ((300, 300, 40, 310, 310, 45), "outside"),
        ((189, 95, 13, 189, 111, 15), "too small"),
    ],
)
def test_bad_boxes_fail_with_status_2_and_no_output(tmp_path, capsys, box, reason):
    out = tmp_path / "out.nii.gz"
    status, _, err = call(capsys, "segment", SAMPLE_IMAGE, "--box-ijk", *box, "-o", out, "-q")
    assert status == 2
    assert_one_line_error(err)
    assert reason in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "extra, reason",
    [
        (["-o", "{tmp}/missing/out.nrrd"], "does not exist"),
        (["-o", "{tmp}/a-file/out.nrrd"], "is not a folder"),
        (["-o", "{tmp}/out.png"], "unsupported extension"),
        (["-o", "{tmp}/out.nrrd", "--key-slice", "20"], "--key-slice 20 is outside"),
        (["-o", "{tmp}/out.nrrd", "--weights-url", "https://example.org/w.pth"], "--weights-sha256"),
        (["-o", "{tmp}/out.nrrd", "--color", "300", "0", "0"], "--color"),
        (["-o", "{tmp}/out.nrrd", "--window", "40"], "--window"),
        (["-o", "{tmp}/out.seg.nrrd", "--name", " "], "--name"),
        (["--axis", "k"], "--output"),
    ],
)
def test_usage_and_input_errors_fail_with_status_2_and_no_output(tmp_path, capsys, extra, reason):
    (tmp_path / "a-file").write_text("not a folder")
    args = [a.format(tmp=tmp_path) for a in extra]
    status, _, err = call(capsys, "segment", SAMPLE_IMAGE, "--box-ijk", *BOX, *args)
    assert status == 2
    assert_one_line_error(err)
    assert reason in err
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


def test_bad_inputs_fail_with_status_2(tmp_path, capsys):
    (tmp_path / "points.mrk.json").write_text('{"markups": [{"type": "Fiducial", "controlPoints": []}]}')
    for args, reason in [
        (["segment", tmp_path / "none.nii.gz", "--box-ijk", *BOX], "not found"),
        (["segment", SAMPLE_IMAGE, "--roi", tmp_path / "points.mrk.json"], "not an ROI"),
        (["segment", SAMPLE_IMAGE, "--roi", tmp_path / "points.mrk.json", "--box-ijk", *BOX], "not allowed with"),
    ]:
        status, _, err = call(capsys, *args, "-o", tmp_path / "out.nrrd")
        assert status == 2, err
        assert_one_line_error(err)
        assert reason in err
    assert not (tmp_path / "out.nrrd").exists()


def test_demo_into_an_impossible_folder_fails_with_status_2_as_segment_does(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    for folder, reason in [(tmp_path / "a-file" / "demo", "cannot create the output folder"),
                           (tmp_path / "a-file", "is not a folder")]:
        status, _, err = call(capsys, "demo", "--output-dir", folder)
        assert status == 2
        assert_one_line_error(err)
        assert reason in err
    assert os.listdir(tmp_path) == ["a-file"]


def test_missing_checkpoint_fails_with_status_1(tmp_path, capsys):
    status, _, err = call(
        capsys, "segment", SAMPLE_IMAGE, "--box-ijk", *BOX, "-o", tmp_path / "out.nrrd",
        "--checkpoint", tmp_path / "nothing.pth", "-q",
    )
    assert status == 1
    assert_one_line_error(err)
    assert "nothing.pth" in err
    assert not (tmp_path / "out.nrrd").exists()


# -- the demo's prompt and picture helpers ----------------------------------------------------


def test_official_box_is_the_middle_slice_bbox_over_the_label_range():
    label = np.zeros((10, 20, 30), np.uint8)
    label[2, 1:3, 1:3] = 1  # first slice
    label[5, 4:9, 10:16] = 1  # middle of 2..9 is int(3.5 + 2) = 5
    label[9, 15:19, 20:29] = 1
    assert official_box(label) == (10, 4, 2, 15, 8, 9)


def test_radiological_display_flips_follow_the_index_directions():
    # The sample: i toward patient left, j toward anterior -> rows are flipped, columns are not.
    assert display_flips(read_image(SAMPLE_IMAGE).ijk_to_ras) == (True, False)
    assert display_flips(np.diag([1.0, -1.0, 1.0, 1.0])) == (False, True)
