""".mrk.json ROI files: read and written the way Slicer itself reads and writes them."""

import json

import numpy as np
import pytest

from MedSAMSegmentLib.errors import InputError, OutputError
from MedSAMSegmentLib.fileio.markups import read_roi_json, write_roi_json


def rotated_roi():
    """An ROI turned about z then x, centred off the origin: every matrix entry matters."""
    cz, sz, cx, sx = np.cos(0.5), np.sin(0.5), np.cos(0.3), np.sin(0.3)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ rx
    matrix[:3, 3] = [10.0, -20.0, 30.0]
    return matrix, np.array([4.0, 6.0, 8.0])


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_write_then_read_gives_the_same_roi(tmp_path, system):
    matrix, size = rotated_roi()
    path = tmp_path / "roi.mrk.json"
    write_roi_json(path, matrix, size, coordinate_system=system)
    assert json.loads(path.read_text())["markups"][0]["coordinateSystem"] == system
    got_matrix, got_size = read_roi_json(path)
    assert np.allclose(got_matrix, matrix, atol=1e-12)
    assert np.allclose(got_size, size)


def test_lps_file_negates_x_and_y(tmp_path):
    matrix, size = rotated_roi()
    write_roi_json(tmp_path / "lps.mrk.json", matrix, size, coordinate_system="LPS")
    roi = json.loads((tmp_path / "lps.mrk.json").read_text())["markups"][0]
    assert np.allclose(roi["center"], [-10.0, 20.0, 30.0])
    assert np.allclose(np.reshape(roi["orientation"], (3, 3)), np.diag([-1, -1, 1]) @ matrix[:3, :3])


def test_write_refuses_to_replace_an_existing_file(tmp_path):
    path = tmp_path / "roi.mrk.json"
    path.write_text("keep")
    with pytest.raises(OutputError, match="exists"):
        write_roi_json(path, *rotated_roi())
    assert path.read_text() == "keep"


# -- interoperability with Slicer's own markups storage (slicer-core, fixtures in conftest.py) --


def slicer_roi_matrix(roi):
    matrix = roi.GetObjectToWorldMatrix()
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_slicer_reads_our_file_as_the_same_roi(tmp_path, slicer_core):
    import slicer

    # LPS only: Slicer 5.13 reads the orientation of a rotated RAS ROI file as if it were LPS
    # (its own RAS files do not survive its round trip), so we write LPS, Slicer's default.
    matrix, size = rotated_roi()
    path = tmp_path / "roi.mrk.json"
    write_roi_json(path, matrix, size)
    roi = slicer_core.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    storage = slicer.vtkMRMLMarkupsROIJsonStorageNode()
    slicer_core.scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(roi)
    assert np.allclose(slicer_roi_matrix(roi), matrix, atol=1e-9)
    assert np.allclose(roi.GetSize(), size)


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_we_read_slicers_file_as_the_same_roi(tmp_path, slicer_core, system):
    import slicer
    import vtk

    matrix, size = rotated_roi()
    roi = slicer_core.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetSize(*size)
    object_to_node = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            object_to_node.SetElement(r, c, matrix[r, c])
    roi.GetObjectToNodeMatrix().DeepCopy(object_to_node)
    roi.Modified()
    storage = roi.CreateDefaultStorageNode()
    slicer_core.scene.AddNode(storage)
    storage.SetCoordinateSystem(getattr(slicer.vtkMRMLStorageNode, f"CoordinateSystem{system}"))
    storage.SetFileName(str(tmp_path / "slicer.mrk.json"))
    assert storage.WriteData(roi)
    got_matrix, got_size = read_roi_json(tmp_path / "slicer.mrk.json")
    assert np.allclose(got_matrix, slicer_roi_matrix(roi), atol=1e-9)
    assert np.allclose(got_matrix, matrix, atol=1e-9)
    assert np.allclose(got_size, size)


# -- what files Slicer may write, and what is not an ROI ---------------------------------------


def write_json(path, markups, **top):
    path.write_text(json.dumps({"markups": markups, **top}))
    return path


def test_older_files_fall_back_to_the_control_point_identity_axes_and_lps(tmp_path):
    path = write_json(
        tmp_path / "old.mrk.json",
        [{"type": "ROI", "size": [2, 3, 4], "controlPoints": [{"position": [1.0, 2.0, 3.0]}]}],
    )
    matrix, size = read_roi_json(path)
    expected = np.eye(4)
    expected[:3, :3] = np.diag([-1.0, -1.0, 1.0])
    expected[:3, 3] = [-1.0, -2.0, 3.0]
    assert np.allclose(matrix, expected)
    assert np.allclose(size, [2, 3, 4])


@pytest.mark.parametrize(
    "markups, reason",
    [
        ([], "not a Slicer markups file"),
        ([{"type": "ROI", "size": [1, 1, 1], "center": [0, 0, 0]}] * 2, "holds 2 markups"),
        ([{"type": "Fiducial", "controlPoints": []}], "'Fiducial' markup, not an ROI"),
        ([{"type": "ROI", "center": [0, 0, 0]}], "no numeric 'size'"),
        ([{"type": "ROI", "center": [0, 0, 0], "size": [1, -1, 1]}], "negative"),
        ([{"type": "ROI", "center": [0, 0], "size": [1, 1, 1]}], "'center' must be 3 finite numbers"),
        ([{"type": "ROI", "size": [1, 1, 1]}], "neither 'center' nor a control point"),
        ([{"type": "ROI", "center": [0, 0, 0], "size": [1, 1, 1], "insideOut": True}], "inside-out"),
        ([{"type": "ROI", "center": [0, 0, 0], "size": [1, 1, 1], "coordinateSystem": "XYZ"}], "neither 'LPS'"),
        ([{"type": "ROI", "center": [0, 0, 0], "size": [1, 1, 1], "coordinateUnits": "um"}], "only mm"),
        ([{"type": "ROI", "center": [0, 0, 0], "size": [1, 1, 1], "orientation": [0] * 9}], "degenerate"),
    ],
)
def test_files_that_are_not_a_single_usable_roi_are_refused(tmp_path, markups, reason):
    with pytest.raises(InputError, match=reason):
        read_roi_json(write_json(tmp_path / "bad.mrk.json", markups))


def test_unreadable_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_roi_json(tmp_path / "none.mrk.json")
    (tmp_path / "broken.mrk.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        read_roi_json(tmp_path / "broken.mrk.json")
