"""The MedSAM effect's Qt-free half on real MRML (slicer-core): box prompts from a drag in any view,
slice ranges, the modifier labelmap on the Segment Editor's grid applied through Slicer's own segment
editor logic (masking, replace-in-slab, undo), the preview node, and the rubber band."""

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")
import slicer  # noqa: E402

from MedSAMSegmentLib.effect import labelmaps, prompts  # noqa: E402
from MedSAMSegmentLib.effect.prompts import BoxPrompt  # noqa: E402
from MedSAMSegmentLib.effect.rubberband import RubberBand  # noqa: E402

from MedSAMSegmentLib.errors import InputError  # noqa: E402
from MedSAMSegmentLib.mrml_bridge import mrml_io  # noqa: E402
from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic  # noqa: E402

SHAPE = (12, 40, 50)  # K, J, I
# LPS-stored volume as Slicer shows it: i -> -R (x flipped), j -> -A, k -> S; anisotropic spacing.
IJK_TO_RAS = np.array([[-0.8, 0, 0, 20.0], [0, -0.8, 0, 15.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])


def ras(ijk):
    return (IJK_TO_RAS @ np.r_[np.asarray(ijk, float), 1.0])[:3]


def rectangle(start, end, axis):
    """The four RAS corners of a rectangle drawn in the plane of `axis` (a view aligned with the
    volume) from index point start to end, in drawing order."""
    position = "ijk".index(axis)
    u, v = [p for p in range(3) if p != position]
    corners = []
    for a, b in ((start[u], start[v]), (end[u], start[v]), (end[u], end[v]), (start[u], end[v])):
        point = list(start)
        point[u], point[v] = a, b
        corners.append(ras(point))
    return corners


@pytest.fixture
def volume(slicer_core):
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 97
    return slicer_core.addVolume(data, IJK_TO_RAS, "MR")


# -- box prompts ----------------------------------------------------------------------------------
def test_box_prompt_round_trips_and_rejects_garbage():
    prompt = BoxPrompt("j", (1, 5, 2, 9, 5, 8))
    assert BoxPrompt.fromParameter(prompt.toParameter()) == prompt
    assert BoxPrompt.fromParameter("") is None
    assert prompt.sliceRange == (5, 5) and prompt.keySlice == 5
    for bad in ("k:1,2,3", "x:1,2,3,4,5,6", "k:a,b,c,d,e,f"):
        with pytest.raises(InputError):
            BoxPrompt.fromParameter(bad)


@pytest.mark.parametrize("normal, axis, box", [
    ((0, 0, 1), "k", (10, 8, 6, 30, 20, 6)),  # axial view
    ((0, 1, 0), "j", (10, 8, 3, 30, 8, 9)),  # coronal view
    ((1, 0, 0), "i", (10, 8, 3, 10, 20, 9)),  # sagittal view
])
def test_drag_in_any_view_gives_the_box_in_that_plane(volume, normal, axis, box):
    """The rectangle's corners (world RAS, as xyToRas gives them) lie in the view plane; the slice
    axis follows the view normal and the slice is the one under the rectangle."""
    start, end = box[:3], box[3:]
    prompt = prompts.boxFromRasCorners(volume, rectangle(start, end, axis), normal)
    assert prompt == BoxPrompt(axis, box)
    # dragging the other way round gives the same box
    assert prompts.boxFromRasCorners(volume, rectangle(end, start, axis), normal).box == box


def test_drag_is_clipped_to_the_volume_and_too_small_boxes_refused(volume):
    prompt = prompts.boxFromRasCorners(volume, rectangle((-20, -5, 4), (70, 60, 4), "k"), (0, 0, 1))
    assert prompt.box == (0, 0, 4, SHAPE[2] - 1, SHAPE[1] - 1, 4)
    with pytest.raises(InputError):
        prompts.boxFromRasCorners(volume, rectangle((5, 5, 4), (5, 5, 4), "k"), (0, 0, 1))  # a click, no drag
    with pytest.raises(InputError, match="outside"):
        prompts.boxFromRasCorners(volume, rectangle((5, 5, 40), (9, 9, 40), "k"), (0, 0, 1))
    with pytest.raises(InputError, match="outside"):
        prompts.boxFromRasCorners(volume, rectangle((60, 70, 4), (80, 90, 4), "k"), (0, 0, 1))


@pytest.mark.parametrize("degrees", [30, 45])
def test_drag_in_a_ras_aligned_view_of_a_rotated_volume_takes_all_four_corners(slicer_core, degrees):
    """A square drawn in a RAS-aligned view of a volume turned in-plane: its index box is the bounding
    box of the four corners' indices (two opposite corners gave 28 x 8 at 30 degrees, 29 x 1 at 45)."""
    turn = np.radians(degrees)
    rotation = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    ijkToRas = np.eye(4)
    ijkToRas[:3, :3] = rotation @ np.diag([0.5, 0.5, 2.0])
    volume = slicer_core.addVolume(np.zeros((6, 120, 120), np.int16), ijkToRas, "turned")
    centre = ijkToRas @ np.array([60, 60, 3, 1.0])
    square = [centre[:3] + np.array([dx, dy, 0.0]) for dx, dy in ((-10, -10), (10, -10), (10, 10), (-10, 10))]
    prompt = prompts.boxFromRasCorners(volume, square, (0, 0, 1))
    indices = np.rint([(np.linalg.inv(ijkToRas) @ np.r_[c, 1.0])[:3] for c in square])
    lo, hi = indices.min(axis=0).astype(int), indices.max(axis=0).astype(int)
    assert prompt.axis == "k"
    assert prompt.box == (lo[0], lo[1], 3, hi[0], hi[1], 3)
    width, height = hi[0] - lo[0] + 1, hi[1] - lo[1] + 1
    assert min(width, height) > 40  # at least the square's 40-voxel side, never a sliver


def test_roi_prompt_uses_the_roi_voxels_and_slices(slicer_core, volume):
    lo, hi = np.array([10, 8, 3]), np.array([30, 20, 7])
    center = (ras(lo) + ras(hi)) / 2
    size = np.abs(ras(hi) - ras(lo)) + np.array([0.5, 0.5, 2.0])
    roi = slicer_core.addRoi(center, size)
    prompt = prompts.roiPrompt(MedSAMLogic(), volume, roi)
    assert prompt == BoxPrompt("k", (10, 8, 3, 30, 20, 7))
    assert prompt.keySlice == 5


@pytest.mark.parametrize("mode, rangeMode, around, expected", [
    ("slice", "roi", 0, (5, 5)),
    ("propagate", "roi", 0, (3, 7)),
    ("propagate", "around", 2, (3, 7)),
    ("propagate", "around", 100, (0, SHAPE[0] - 1)),
    ("propagate", "volume", 0, (0, SHAPE[0] - 1)),
])
def test_slice_ranges(mode, rangeMode, around, expected):
    prompt = BoxPrompt("k", (10, 8, 3, 30, 20, 7))
    box, key = prompts.requestBox(prompt, mode, rangeMode, around, SHAPE)
    assert key == 5 and box[:2] == (10, 8) and box[3:5] == (30, 20)
    assert (box[2], box[5]) == expected


def test_slice_ranges_along_other_axes_and_bad_options():
    prompt = BoxPrompt("i", (7, 8, 3, 7, 20, 9))
    box, key = prompts.requestBox(prompt, "propagate", "volume", 0, SHAPE)
    assert box == (0, 8, 3, SHAPE[2] - 1, 20, 9) and key == 7
    with pytest.raises(InputError):
        prompts.requestBox(prompt, "everything", "roi", 0, SHAPE)
    with pytest.raises(InputError):
        prompts.requestBox(prompt, "propagate", "nearby", 0, SHAPE)


# -- applying through Slicer's segment editor logic -----------------------------------------------
def block(lo, hi):
    mask = np.zeros(SHAPE, np.uint8)
    mask[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = 1
    return mask


def segmentMask(core, segmentation, segmentId, volume):
    return core.segmentArray(segmentation, segmentId, volume) > 0


@pytest.mark.parametrize("finer", [False, True])
def test_apply_add_and_replace_in_processed_slices(slicer_core, volume, vtk_messages, finer):
    """"add" unites; "replace" (remove the slab, add) changes the processed slices only. With a finer
    segmentation grid than the volume (finer=True) the mask is resampled onto the editor's grid."""
    segmentation = slicer_core.addSegmentation(referenceVolume=volume)
    if finer:
        fine = IJK_TO_RAS.copy()
        fine[:3, :3] /= 2
        fine[:3, 3] = ras((-0.25, -0.25, -0.25))
        reference = slicer_core.addVolume(np.zeros((SHAPE[0] * 2, SHAPE[1] * 2, SHAPE[2] * 2), np.uint8), fine, "fine")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    logic = MedSAMLogic()
    old = block((5, 5, 2), (9, 9, 2)) | block((35, 30, 6), (40, 35, 6))
    segmentId = logic.writeMaskToSegment(old, volume, segmentation, "target")
    editor, editorNode = slicer_core.addSegmentEditor(segmentation, volume)
    editorNode.SetSelectedSegmentID(segmentId)
    reference = editor.GetAlignedSourceVolume()
    box, axis = (10, 8, 5, 30, 20, 7), "k"
    new = block((12, 10, 5), (25, 18, 7))

    labelmap = labelmaps.maskToLabelmap(new, volume, segmentation, reference)
    slab = labelmaps.slabLabelmap(box, axis, volume, segmentation, reference)
    editor.SaveStateForUndo()  # what the effect's apply does for "replace": remove the slab, add the mask
    editor.ModifySegmentByLabelmap(segmentation, segmentId, slab, editor.ModificationModeRemove, True, False)
    editor.ModifySegmentByLabelmap(segmentation, segmentId, labelmap, editor.ModificationModeAdd, True, False)
    result = segmentMask(slicer_core, segmentation, segmentId, volume)
    expected = new.astype(bool) | block((5, 5, 2), (9, 9, 2)).astype(bool)  # slice 6's old block replaced
    assert np.array_equal(result, expected)

    editor.Undo()  # one undo step reverts both
    assert np.array_equal(segmentMask(slicer_core, segmentation, segmentId, volume), old.astype(bool))
    editor.SaveStateForUndo()
    editor.ModifySegmentByLabelmap(segmentation, segmentId, labelmap, editor.ModificationModeAdd, True, False)
    assert np.array_equal(segmentMask(slicer_core, segmentation, segmentId, volume), old.astype(bool) | new.astype(bool))
    assert not vtk_messages.errors


def test_replace_on_a_tilted_segmentation_grid_keeps_the_segment_outside_the_processed_slices(
        slicer_core, volume, vtk_messages):
    """The slab of processed slices on a segmentation grid tilted 40 degrees against the volume holds the
    grid voxels of those slices, not the bounding box of its corners (which spanned many more slices
    and erased the segment there)."""
    turn = np.radians(40)
    tilt = np.eye(4)
    tilt[:3, :3] = [[1, 0, 0], [0, np.cos(turn), -np.sin(turn)], [0, np.sin(turn), np.cos(turn)]]
    tilted = slicer_core.addVolume(np.zeros((24, 60, 60), np.uint8), tilt @ IJK_TO_RAS @ np.diag([1, 1, 0.4, 1]), "tilted")
    segmentation = slicer_core.addSegmentation(referenceVolume=tilted)
    logic = MedSAMLogic()
    old = block((0, 0, 0), (SHAPE[2] - 1, SHAPE[1] - 1, SHAPE[0] - 1))  # the whole volume
    segmentId = logic.writeMaskToSegment(old, volume, segmentation, "target")
    editor, editorNode = slicer_core.addSegmentEditor(segmentation, volume)
    editorNode.SetSelectedSegmentID(segmentId)
    reference = editor.GetAlignedSourceVolume()
    slab = labelmaps.slabLabelmap((0, 0, 6, SHAPE[2] - 1, SHAPE[1] - 1, 6), "k", volume, segmentation, reference)
    editor.SaveStateForUndo()
    editor.ModifySegmentByLabelmap(segmentation, segmentId, slab, editor.ModificationModeRemove, True, False)
    result = segmentMask(slicer_core, segmentation, segmentId, volume)
    kept = np.flatnonzero(result.any(axis=(1, 2)))
    assert set(range(SHAPE[0])) - set(kept) <= {5, 6, 7}, f"slices emptied: {sorted(set(range(SHAPE[0])) - set(kept))}"
    assert not result[6].all(), "slice 6 itself was processed"
    assert not vtk_messages.errors


def test_apply_honours_the_editable_area(slicer_core, volume, vtk_messages):
    segmentation = slicer_core.addSegmentation(referenceVolume=volume)
    logic = MedSAMLogic()
    area = block((0, 0, 0), (19, 39, 11))  # left part of the volume only
    areaId = logic.writeMaskToSegment(area, volume, segmentation, "area")
    targetId = logic.writeMaskToSegment(np.zeros(SHAPE, np.uint8), volume, segmentation, "target")
    editor, editorNode = slicer_core.addSegmentEditor(segmentation, volume)
    editorNode.SetSelectedSegmentID(targetId)
    editorNode.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editorNode.SetMaskSegmentID(areaId)
    new = block((12, 10, 5), (25, 18, 7))
    labelmap = labelmaps.maskToLabelmap(new, volume, segmentation, editor.GetAlignedSourceVolume())
    editor.ModifySegmentByLabelmap(segmentation, targetId, labelmap, editor.ModificationModeAdd, True, False)
    assert np.array_equal(segmentMask(slicer_core, segmentation, targetId, volume), new.astype(bool) & area.astype(bool))
    assert not vtk_messages.errors


def test_mask_of_the_wrong_shape_is_refused(slicer_core, volume):
    segmentation = slicer_core.addSegmentation(referenceVolume=volume)
    with pytest.raises(InputError, match="shape"):
        labelmaps.maskToLabelmap(np.zeros((2, 2, 2), np.uint8), volume, segmentation, slicer.vtkOrientedImageData())


# -- preview node ---------------------------------------------------------------------------------
def test_preview_is_a_separate_translucent_segmentation(slicer_core, volume, vtk_messages):
    segmentation = slicer_core.addSegmentation("Lesions", referenceVolume=volume)
    transform = slicer_core.addLinearTransform(np.eye(4))
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    editor, _editorNode = slicer_core.addSegmentEditor(segmentation, volume)
    new = block((12, 10, 5), (25, 18, 7))
    labelmap = labelmaps.maskToLabelmap(new, volume, segmentation, editor.GetAlignedSourceVolume())

    preview = labelmaps.createPreviewNode(slicer_core.scene, segmentation)
    segmentId = labelmaps.updatePreview(preview, labelmap, "tumour", (0.2, 0.4, 0.6))
    assert preview.GetName() == "Lesions preview" and preview is not segmentation
    assert preview.GetParentTransformNode() is transform
    assert preview.GetDisplayNode().GetOpacity() == pytest.approx(labelmaps.PREVIEW_OPACITY)
    segment = preview.GetSegmentation().GetSegment(segmentId)
    assert segment.GetName() == "tumour" and segment.GetColor() == pytest.approx((0.2, 0.4, 0.6))
    assert np.array_equal(mrml_io.readSegmentMask(preview, segmentId, volume), new)
    # an update replaces the preview's content, still one segment
    labelmaps.updatePreview(preview, labelmaps.maskToLabelmap(new * 0, volume, segmentation, labelmap), "tumour", (1, 0, 0))
    assert preview.GetSegmentation().GetNumberOfSegments() == 1
    assert not mrml_io.readSegmentMask(preview, segmentId, volume).any()
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0  # nothing written to the real one
    assert not vtk_messages.errors


# -- rubber band ----------------------------------------------------------------------------------
def test_rubber_band_follows_the_drag_then_the_view():
    band = RubberBand()
    assert not band.actor.GetVisibility()
    band.start((10, 20))
    band.setXy((10, 20), (50, 60))
    assert band.dragging and band.actor.GetVisibility()
    assert [band.points.GetPoint(i)[:2] for i in range(4)] == [(10, 20), (50, 20), (50, 60), (10, 60)]
    assert band.displayCorners((50, 60)) == [(10, 20), (50, 20), (50, 60), (10, 60)]
    assert band.polyData.GetNumberOfCells() == 1 and band.polyData.GetCell(0).GetNumberOfPoints() == 5

    rasCorners = [(0, 0, 5), (4, 0, 5), (4, 4, 5), (0, 4, 5)]
    band.finish(rasCorners, sliceOffset=5.0)
    assert not band.dragging
    zoomed = lambda p: (2 * p[0], 2 * p[1])  # noqa: E731 - the view's RAS -> xy after a zoom
    assert band.reposition(zoomed, 5.0)
    assert [band.points.GetPoint(i)[:2] for i in range(4)] == [(0, 0), (8, 0), (8, 8), (0, 8)]
    assert not band.reposition(zoomed, 8.0) and not band.actor.GetVisibility()  # another slice
    assert band.reposition(zoomed, 5.0 + 1e-4)
    band.clear()
    assert not band.reposition(zoomed, 5.0)


# -- the whole non-Qt path of the effect, with the real model -------------------------------------
def test_effect_path_on_the_bundled_sample(slicer_core, vtk_messages):
    """What Apply does after a drag on the tumour's middle slice: box from the drag, LiteMedSAM on
    that slice (CPU), mask onto the editor's grid, written through Slicer's segment editor logic."""
    pytest.importorskip("torch")
    from MedSAMSegmentLib.demo import SAMPLE_IMAGE, SAMPLE_LABEL, dice, official_box
    from MedSAMSegmentLib.settings import MedSAMSettings

    volume = slicer_core.volumesLogic.AddArchetypeVolume(str(SAMPLE_IMAGE), "brain1")
    labelNode = slicer_core.volumesLogic.AddArchetypeVolume(str(SAMPLE_LABEL), "label")
    label = mrml_io.volumeArray(labelNode) > 0
    i0, j0, k0, i1, j1, k1 = official_box(label)
    middle = int((k1 - k0) / 2 + k0)
    ijkToRas = mrml_io.volumeIjkToWorldMatrix(volume)
    corners = [(ijkToRas @ np.array([i, j, middle, 1.0]))[:3] for i, j in ((i0, j0), (i1, j0), (i1, j1), (i0, j1))]
    prompt = prompts.boxFromRasCorners(volume, corners, ijkToRas[:3, 2])
    assert prompt == BoxPrompt("k", (i0, j0, middle, i1, j1, middle))
    box, keySlice = prompts.requestBox(prompt, "slice", "around", 3, label.shape)

    from MedSAMSegmentLib.errors import DependencyError, WeightsError

    logic = MedSAMLogic(MedSAMSettings(model="litemedsam", device="cpu"))
    try:
        mask, info = logic.computeMask(volume, indexBox=box, axis=prompt.axis, keySlice=keySlice)
    except (DependencyError, WeightsError) as exc:
        pytest.skip(f"model not available here: {exc}")
    assert info["slices"] == [middle]
    segmentation = slicer_core.addSegmentation(referenceVolume=volume)
    segmentId = logic.writeMaskToSegment(np.zeros_like(mask), volume, segmentation, "tumour")
    editor, editorNode = slicer_core.addSegmentEditor(segmentation, volume)
    editorNode.SetSelectedSegmentID(segmentId)
    labelmap = labelmaps.maskToLabelmap(mask, volume, segmentation, editor.GetAlignedSourceVolume())
    editor.SaveStateForUndo()
    editor.ModifySegmentByLabelmap(segmentation, segmentId, labelmap, editor.ModificationModeAdd, True, False)

    written = segmentMask(slicer_core, segmentation, segmentId, volume)
    assert np.array_equal(written, mask.astype(bool))
    assert written[middle].any() and not np.delete(written, middle, axis=0).any()
    score = dice(written[middle], label[middle])
    print(f"effect path, slice {middle}: Dice {score:.3f}")
    assert score > 0.3
    assert not vtk_messages.errors
