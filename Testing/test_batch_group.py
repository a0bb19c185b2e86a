"""--group-by-image: one multi-segment .seg.nrrd per image. Overlapping segments go to separate
layers, and Slicer (slicer-core's own reader) gets back every segment voxel for voxel."""

import numpy as np
import pytest

from test_batch import GALLBLADDER_BOX, KIDNEY_BOX, box_text, report, write_manifest


def _image():
    from MedSAMSegmentLib.fileio.imageio import Image

    array = np.zeros((6, 20, 24), np.int16)
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # rotated: geometry must follow
    return Image(array, (0.8, 0.9, 2.5), (10.0, -5.0, 30.0), direction)


def test_overlapping_segments_take_layers_and_slicer_reads_each_back(slicer_core, tmp_path):
    import slicer

    from MedSAMSegmentLib.batch.segfile import _layers, write_segments
    from MedSAMSegmentLib.mrml_bridge.mrml_io import readSegmentMask

    image = _image()
    a, b, c = (np.zeros(image.shape, np.uint8) for _ in range(3))
    a[1:4, 2:10, 3:12] = 1
    b[2:5, 6:14, 8:20] = 1  # overlaps a
    c[0:2, 15:19, 1:5] = 1  # touches neither
    assert _layers([a, b, c]) == ([(0, 1), (1, 1), (0, 2)], 2)
    path = tmp_path / "image.seg.nrrd"
    write_segments(path, [("A", (1, 0, 0), a), ("B", (0, 1, 0), b), ("C", (0, 0, 1), c)], image,
                   tags={"MedSAMSegment.BatchFingerprint": "f" * 64})

    volume = slicer_core.addVolume(image.array, image.ijk_to_ras)
    segmentation = slicer_core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    slicer_core.scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(segmentation)
    segments = segmentation.GetSegmentation()
    assert segments.GetNumberOfSegments() == 3
    for number, (name, expected) in enumerate((("A", a), ("B", b), ("C", c))):
        segment_id = segments.GetNthSegmentID(number)
        assert segments.GetSegment(segment_id).GetName() == name
        assert np.array_equal(readSegmentMask(segmentation, segment_id, volume), expected), name


def test_group_by_image_writes_one_file_per_image_and_resumes(tmp_path, cases_dir):
    pytest.importorskip("slicer", reason="reads the file back with slicer-core")
    import SimpleITK as sitk

    from MedSAMSegmentLib.batch import run_batch

    image = cases_dir / "mr_abdomen_totalseg" / "image.nii.gz"
    manifest = write_manifest(tmp_path / "cohort.csv", [
        {"image": str(image), "box_ijk": box_text(KIDNEY_BOX), "name": "kidney", "modality": "MR"},
        {"image": str(image), "box_ijk": box_text(GALLBLADDER_BOX), "name": "gallbladder", "modality": "MR"},
    ])
    out = tmp_path / "out"
    first = run_batch(manifest, out, device="cpu", group_by_image=True)
    assert first.exit_status == 0 and [line["status"] for line in first.rows] == ["done", "done"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["image.seg.nrrd", "report.csv",
                                                                                   "report.json"]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out / "image.seg.nrrd"))
    reader.ReadImageInformation()
    assert [reader.GetMetaData(f"Segment{n}_Name") for n in (0, 1)] == ["kidney", "gallbladder"]
    again = run_batch(manifest, out, device="cpu", group_by_image=True)
    assert [line["status"] for line in again.rows] == ["skipped", "skipped"]
    assert [line["voxels"] for line in again.rows] == [line["voxels"] for line in first.rows]
    assert report(out)[2]["status"] == "skipped"
