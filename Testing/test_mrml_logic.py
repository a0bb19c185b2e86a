"""MedSAMLogic on real slicer-core MRML nodes, the real LiteMedSAM and real cases.

Cases come from ../shared/data/cases (CASES.md). The model runs on a few slices per test; the
predictor's embedding cache is keyed by slice content, so tests that segment the same voxels
again only pay for the decoder.
"""

import math
import os

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
sitk = pytest.importorskip("SimpleITK")

import slicercore  # noqa: E402
from MedSAMSegmentLib.engine import geometry  # noqa: E402
from MedSAMSegmentLib.engine.metrics import dice  # noqa: E402
from MedSAMSegmentLib.errors import CancelledError, InputError, OutputError  # noqa: E402
from MedSAMSegmentLib.mrml_bridge import mrml_io  # noqa: E402
from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic  # noqa: E402
from MedSAMSegmentLib.settings import MedSAMSettings, shared_predictor  # noqa: E402

CORD = "mr_cspine_t2_cord"  # 52 x 60 x 55, cord bbox i20-32 j26-36 k0-54
BRAIN = "mr_brain1_tumor"  # 256 x 256 x 25, tumour bbox i162-208 j102-171 k11-17
CORD_LO, CORD_HI = np.array([18, 24, 25]), np.array([34, 38, 27])  # three slices around the cord


# -- helpers ------------------------------------------------------------------------------
def rotation(axis, degrees):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    x, y, z = axis
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return c * np.eye(3) + s * cross + (1 - c) * np.outer(axis, axis)


def rigid(linear, translation):
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = translation
    return matrix


def loadCase(core, cases_dir, name, ijkToRas=None, nodeName=None):
    """(volume node, uint8 label (K, J, I), IJK-to-RAS of the file)."""
    image = sitk.ReadImage(str(cases_dir / name / "image.nii.gz"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(cases_dir / name / "label.nii.gz")))
    fileMatrix = slicercore.ijkToRasFromSitk(image)
    matrix = fileMatrix if ijkToRas is None else ijkToRas
    volume = core.addVolume(sitk.GetArrayFromImage(image), matrix, nodeName or name)
    return volume, (label > 0).astype(np.uint8), fileMatrix


def roiForIndexRange(core, ijkToWorld, lo, hi, parentTransform=None, name="ROI"):
    """ROI along the volume's axes whose faces lie half a voxel beyond voxel centres lo..hi."""
    linear = ijkToWorld[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    objectToWorld = rigid(linear / spacing, (ijkToWorld @ np.r_[(np.asarray(lo) + hi) / 2, 1.0])[:3])
    if np.linalg.det(objectToWorld[:3, :3]) < 0:  # an ROI frame is a rotation; the box is the same
        objectToWorld[:3, 2] *= -1
    return addRoiAtWorldPose(core, objectToWorld, (np.asarray(hi) - lo + 1) * spacing, parentTransform, name)


def addRoiAtWorldPose(core, objectToWorld, size, parentTransform=None, name="ROI"):
    parentToWorld = np.eye(4) if parentTransform is None else transformToWorld(parentTransform)
    objectToNode = np.linalg.inv(parentToWorld) @ objectToWorld
    roi = core.addRoi(objectToNode[:3, 3], size, axes=objectToNode[:3, :3], name=name)
    if parentTransform is not None:
        roi.SetAndObserveTransformNodeID(parentTransform.GetID())
    return roi


def transformToWorld(transformNode):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(matrix)
    return slicercore.toNumpyMatrix(matrix)


def segmentsByName(segmentationNode, volumeNode):
    """{name: (segment ID, uint8 mask on the volume)} of every segment."""
    segmentation = segmentationNode.GetSegmentation()
    result = {}
    for n in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(n)
        name = segmentation.GetSegment(segmentId).GetName()
        result[name] = (segmentId, mrml_io.readSegmentMask(segmentationNode, segmentId, volumeNode))
    return result


def assertSameSegments(before, after):
    assert list(before) == list(after)
    for name in before:
        assert before[name][0] == after[name][0], name
        assert np.array_equal(before[name][1], after[name][1]), f"segment {name} changed"


def blob(shape, lo, hi):
    mask = np.zeros(shape, np.uint8)
    mask[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = 1
    return mask


@pytest.fixture(scope="module")
def predictor():
    return shared_predictor(MedSAMSettings())


@pytest.fixture
def logic(predictor):
    return MedSAMLogic(predictor=predictor)


# -- reading MRML: box, axis, window (no model) ----------------------------------------------
def test_prepare_reads_box_axis_and_window_choice(slicer_core, cases_dir, logic, vtk_messages):
    volume, _label, matrix = loadCase(slicer_core, cases_dir, CORD)
    roi = roiForIndexRange(slicer_core, matrix, CORD_LO, CORD_HI)
    request = logic.prepare(volume, roi)
    assert request.box == (*CORD_LO, *CORD_HI)
    assert request.axis == "k" and request.mode == "default"
    # The default is MedSAM's own preprocessing, whatever the view shows (docs/SLICER.md measures why).
    display = volume.GetDisplayNode()
    display.AutoWindowLevelOff()  # as the GUI does when the user drags the window
    display.SetWindowLevel(300, 200)
    assert request.windowSpec == ("auto", None)
    assert logic.prepare(volume, roi).windowSpec == ("auto", None)
    assert logic.prepare(volume, roi, window="auto").windowSpec == ("auto", None)
    # The view's window/level only when asked for.
    assert logic.prepare(volume, roi, window="view").windowSpec == ("explicit", 200, 300)
    assert logic.prepare(volume, roi, window=(100, 50)).windowSpec == ("explicit", 100, 50)
    assert logic.prepare(volume, roi, window="mr").windowSpec == ("auto", "MR")
    for bad in ["PET", (1, 2, 3), object()]:
        with pytest.raises(InputError):
            logic.prepare(volume, roi, window=bad)
    volume.SetAndObserveDisplayNodeID(None)
    with pytest.raises(InputError, match="display window"):
        logic.prepare(volume, roi, window="view")
    # the ROI's z axis picks the slice axis: turn the ROI so its z runs along the volume's i
    roi.GetObjectToNodeMatrix().DeepCopy(slicercore.toVtkMatrix(rigid(rotation((0, 1, 0), 90), roi.GetCenter())))
    assert logic.prepare(volume, roi).axis == "i"
    assert logic.prepare(volume, roi, axis="j").axis == "j"
    with pytest.raises(InputError, match="Key slice"):
        logic.prepare(volume, roi, axis="k", keySlice=40)
    with pytest.raises(InputError, match="mode"):
        logic.prepare(volume, roi, mode="fast")
    assert not vtk_messages.errors


def test_rotated_roi_on_oblique_volume_gives_tight_box(slicer_core, logic, vtk_messages):
    """Box == index range of voxel centres inside the ROI by Slicer's own IsPointInROIWorld."""
    shape = (14, 16, 18)
    ijkToRas = rigid(rotation((1, 2, 3), 25) @ np.diag([-1.0, -1.0, 1.0]) @ np.diag([1.2, 0.9, 2.0]), (40, -20, 10))
    volume = slicer_core.addVolume(np.arange(np.prod(shape), dtype=np.int16).reshape(shape), ijkToRas, "oblique")
    transform = slicer_core.addLinearTransform(rigid(rotation((0, 0, 1), -30), (5, 6, -7)))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    ijkToWorld = transformToWorld(transform) @ ijkToRas
    centre = (ijkToWorld @ np.array([9, 8, 7, 1.0]))[:3]
    roi = addRoiAtWorldPose(slicer_core, rigid(rotation((3, -1, 2), 50), centre), (9.0, 5.0, 7.0))
    box = logic.prepare(volume, roi).box
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    points = (ijkToWorld @ np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)]))[:3].T
    inside = np.array([roi.IsPointInROIWorld(p) for p in points]).reshape(shape)
    k, j, i = np.nonzero(inside)
    assert box == (i.min(), j.min(), k.min(), i.max(), j.max(), k.max())
    assert not vtk_messages.errors


def test_roi_outside_or_on_another_volume_or_nonlinear_transform_is_rejected(slicer_core, cases_dir, logic, vtk_messages):
    cord, _label, cordMatrix = loadCase(slicer_core, cases_dir, CORD)
    brainMatrix = rigid(np.diag([-0.8, -0.8, 6.5]), (300, 300, 0))  # far from the cord volume
    brain = slicer_core.addVolume(np.ones((25, 40, 40), np.int16), brainMatrix, "brain")
    roiOnBrain = roiForIndexRange(slicer_core, brainMatrix, (10, 10, 5), (20, 20, 8), name="BrainROI")
    assert logic.prepare(brain, roiOnBrain).box == (10, 10, 5, 20, 20, 8)
    with pytest.raises(InputError, match="'BrainROI' on volume '.*cord.*'.*does not overlap"):
        logic.prepare(cord, roiOnBrain)
    segmentation = slicer_core.addSegmentation()
    with pytest.raises(InputError):
        logic.segment(cord, roiOnBrain, segmentation, "x")
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0

    import vtk

    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point in [(0, 0, 0), (50, 0, 0), (0, 50, 0), (0, 0, 50)]:
        source.InsertNextPoint(point)
        target.InsertNextPoint(point[0] + 3, point[1], point[2])
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    warpNode = slicer_core.scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    warpNode.SetAndObserveTransformToParent(warp)
    roi = roiForIndexRange(slicer_core, cordMatrix, CORD_LO, CORD_HI)
    cord.SetAndObserveTransformNodeID(warpNode.GetID())
    with pytest.raises(InputError, match="non-linear"):
        logic.prepare(cord, roi)
    cord.SetAndObserveTransformNodeID(None)
    roi.SetAndObserveTransformNodeID(warpNode.GetID())
    with pytest.raises(InputError, match="non-linear"):
        logic.prepare(cord, roi)
    assert not vtk_messages.errors


# -- segmenting with the real model --------------------------------------------------------
def test_rotated_flipped_transformed_geometry_gives_identical_mask(slicer_core, cases_dir, logic, vtk_messages):
    """Same voxels, 20-degree rotated and LPS->RAS flipped IJK-to-RAS, a parent transform,
    the ROI moved along: the same voxels are segmented, bit for bit."""
    volumeA, label, matrixA = loadCase(slicer_core, cases_dir, CORD, nodeName="A")
    roiA = roiForIndexRange(slicer_core, matrixA, CORD_LO, CORD_HI, name="ROI A")
    matrixB = rigid(rotation((1, 1, 1), 20) @ np.diag([-1.0, -1.0, 1.0]) @ matrixA[:3, :3], (-30, 45, 12))
    volumeB, _, _ = loadCase(slicer_core, cases_dir, CORD, ijkToRas=matrixB, nodeName="B")
    transform = slicer_core.addLinearTransform(rigid(rotation((0, 1, 0), 15), (5, -10, 20)))
    volumeB.SetAndObserveTransformNodeID(transform.GetID())
    worldB = transformToWorld(transform) @ matrixB
    poseB = worldB @ np.linalg.inv(matrixA) @ slicercore.toNumpyMatrix(roiA.GetObjectToWorldMatrix())
    if np.linalg.det(poseB[:3, :3]) < 0:
        poseB[:3, 2] *= -1
    roiB = addRoiAtWorldPose(slicer_core, poseB, roiA.GetSize(), transform, name="ROI B")

    requestA, requestB = logic.prepare(volumeA, roiA), logic.prepare(volumeB, roiB)
    assert requestA.box == requestB.box == (*CORD_LO, *CORD_HI)
    assert requestA.axis == requestB.axis == "k"
    segmentationA, segmentationB = slicer_core.addSegmentation("A"), slicer_core.addSegmentation("B")
    idA = logic.segment(volumeA, roiA, segmentationA, "cord")
    idB = logic.segment(volumeB, roiB, segmentationB, "cord")
    maskA = mrml_io.readSegmentMask(segmentationA, idA, volumeA)
    maskB = mrml_io.readSegmentMask(segmentationB, idB, volumeB)
    assert maskA.sum() > 100 and np.array_equal(maskA, maskB)
    # Slicer's own export onto each volume agrees (the segmentation B is not transformed)
    assert np.array_equal(slicer_core.segmentArray(segmentationA, idA, volumeA), maskA)
    assert np.array_equal(slicer_core.segmentArray(segmentationB, idB, volumeB), maskB)
    k0, k1 = CORD_LO[2], CORD_HI[2]
    assert dice(maskA[k0 : k1 + 1], label[k0 : k1 + 1]) > 0.85
    assert not maskA[: k0].any() and not maskA[k1 + 1 :].any()
    assert not vtk_messages.errors


def test_truly_resampled_rotation_keeps_accuracy(slicer_core, cases_dir, logic, vtk_messages):
    """The tumour resampled onto a grid turned 20 degrees in-plane (linear image, nearest
    label), prompted by an ROI on the rotated label's box: Dice >= unrotated Dice - 0.05."""
    image = sitk.ReadImage(str(cases_dir / BRAIN / "image.nii.gz"))
    labelImage = sitk.ReadImage(str(cases_dir / BRAIN / "label.nii.gz"))
    label = sitk.GetArrayFromImage(labelImage) > 0
    k, j, i = np.nonzero(label)
    middle = [(i.min() + i.max()) / 2, (j.min() + j.max()) / 2, (k.min() + k.max()) / 2]
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(middle))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    turn = rotation(direction[:, 2], 20)  # about the slice normal: an in-plane rotation
    origin = centre + turn @ (np.array(image.GetOrigin()) - centre)
    grid = dict(size=image.GetSize(), outputOrigin=tuple(origin), outputSpacing=image.GetSpacing(),
                outputDirection=tuple((turn @ direction).ravel()))
    identity = sitk.Transform()
    turnedImage = sitk.Resample(image, transform=identity, interpolator=sitk.sitkLinear, defaultPixelValue=0, **grid)
    turnedLabel = sitk.Resample(labelImage, transform=identity, interpolator=sitk.sitkNearestNeighbor, **grid)
    turnedLabel = sitk.GetArrayFromImage(turnedLabel) > 0

    results = {}
    for name, img, lab in [("straight", image, label), ("turned", turnedImage, turnedLabel)]:
        matrix = slicercore.ijkToRasFromSitk(img)
        volume = slicer_core.addVolume(sitk.GetArrayFromImage(img), matrix, name)
        kk, jj, ii = np.nonzero(lab)
        roi = roiForIndexRange(slicer_core, matrix, (ii.min(), jj.min(), kk.min()), (ii.max(), jj.max(), kk.max()))
        segmentation = slicer_core.addSegmentation(name)
        segmentId = logic.segment(volume, roi, segmentation, "tumour", window="MR")
        results[name] = dice(mrml_io.readSegmentMask(segmentation, segmentId, volume), lab)
    print(f"\nDice straight {results['straight']:.4f}, turned 20 degrees {results['turned']:.4f}")
    # The official LiteMedSAM run reaches 0.431 on this lesion with a tighter prompt; a geometry
    # error (axes swapped, mask written unrotated) scores near 0. Measured: straight 0.75, turned
    # 0.56 (official mode 0.37 and 0.57: the resampled pixels change the prompts of both modes).
    assert results["straight"] > 0.4 and results["turned"] > 0.4
    assert not vtk_messages.errors


def test_roi_partly_outside_is_clipped_and_segmented(slicer_core, cases_dir, logic, vtk_messages):
    volume, label, matrix = loadCase(slicer_core, cases_dir, CORD)
    roi = roiForIndexRange(slicer_core, matrix, (18, 24, 52), (34, 38, 70))  # k beyond 54
    segmentation = slicer_core.addSegmentation()
    segmentId = logic.segment(volume, roi, segmentation, "cord")
    mask = mrml_io.readSegmentMask(segmentation, segmentId, volume)
    assert logic.prepare(volume, roi).box == (18, 24, 52, 34, 38, 54)
    assert not mask[:52].any() and not mask[:, :24].any() and not mask[:, 39:].any()
    assert dice(mask[52:], label[52:]) > 0.8
    assert not vtk_messages.errors


def test_roi_rotated_relative_to_the_volume_segments_its_voxels(slicer_core, cases_dir, logic, vtk_messages):
    """An ROI turned 30 degrees about the slice normal: the prompt is the tight box of the
    voxel centres inside it (Slicer's IsPointInROIWorld), and the cord is found."""
    volume, label, matrix = loadCase(slicer_core, cases_dir, CORD)
    centre = (matrix @ np.array([26, 31, 26, 1.0]))[:3]
    roi = addRoiAtWorldPose(slicer_core, rigid(rotation(matrix[:3, 2], 30), centre), (15.0, 13.0, 3.0))
    request = logic.prepare(volume, roi)
    shape = mrml_io.volumeArray(volume).shape
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    points = (matrix @ np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)]))[:3].T
    inside = np.array([roi.IsPointInROIWorld(p) for p in points]).reshape(shape)
    k, j, i = np.nonzero(inside)
    assert request.box == (i.min(), j.min(), k.min(), i.max(), j.max(), k.max())
    assert request.axis == "k" and (k.min(), k.max()) == (25, 27)
    segmentation = slicer_core.addSegmentation()
    mask = mrml_io.readSegmentMask(segmentation, logic.segment(volume, roi, segmentation), volume)
    # the voxel box above is the geometry check; the Dice only shows the cord was found (0.72 here,
    # 0.80 in official mode: this loose ROI lets the wider candidate box take in some neighbour)
    assert dice(mask[25:28], label[25:28]) > 0.65 and not mask[:25].any() and not mask[28:].any()
    assert segmentation.GetSegmentation().GetSegment(segmentation.GetSegmentation().GetNthSegmentID(0)).GetName() == "MedSAM"
    assert not vtk_messages.errors


def test_existing_segment_is_updated_and_others_stay_bit_identical(slicer_core, cases_dir, logic, vtk_messages):
    volume, _label, matrix = loadCase(slicer_core, cases_dir, CORD)
    shape = mrml_io.volumeArray(volume).shape
    segmentation = slicer_core.addSegmentation()
    # Others overlap the ROI; some share one labelmap layer with the target.
    masks = {
        "Overlapping": blob(shape, (20, 20, 20), (30, 34, 30)),
        "Elsewhere": blob(shape, (2, 2, 2), (8, 8, 8)),
        "cord": blob(shape, (40, 40, 40), (45, 45, 45)),
        "Beside": blob(shape, (40, 2, 40), (45, 8, 45)),
    }
    for name, mask in masks.items():
        logic.writeMaskToSegment(mask, volume, segmentation, name)
    segmentation.GetSegmentation().CollapseBinaryLabelmaps(False)
    assert segmentation.GetSegmentation().GetNumberOfLayers() < len(masks)
    before = segmentsByName(segmentation, volume)
    for name, mask in masks.items():
        assert np.array_equal(before[name][1], mask)

    roi = roiForIndexRange(slicer_core, matrix, CORD_LO, CORD_HI)
    expected, _info = logic.computeMask(volume, roi)
    segmentId = logic.segment(volume, roi, segmentation, "cord")
    after = segmentsByName(segmentation, volume)
    assert segmentId == before["cord"][0]
    assert list(after) == list(before)
    assert np.array_equal(after["cord"][1], expected) and expected.any()
    del before["cord"], after["cord"]
    assertSameSegments(before, after)
    assert not vtk_messages.errors


def test_cancel_mid_propagation_writes_nothing(slicer_core, cases_dir, logic, vtk_messages):
    volume, _label, matrix = loadCase(slicer_core, cases_dir, CORD)
    shape = mrml_io.volumeArray(volume).shape
    segmentation = slicer_core.addSegmentation()
    logic.writeMaskToSegment(blob(shape, (20, 20, 20), (30, 34, 30)), volume, segmentation, "cord")
    logic.writeMaskToSegment(blob(shape, (2, 2, 2), (8, 8, 8)), volume, segmentation, "other")
    before = segmentsByName(segmentation, volume)
    roi = roiForIndexRange(slicer_core, matrix, CORD_LO, CORD_HI)
    progress = []
    for name in ("cord", "new"):
        progress.clear()
        with pytest.raises(CancelledError):
            logic.segment(volume, roi, segmentation, name, progressCallback=lambda done, total: progress.append(done),
                          cancelCallback=lambda: len(progress) >= 1)
        assert progress == [1]  # stopped between slices, after the first one
        assertSameSegments(before, segmentsByName(segmentation, volume))
    assert not vtk_messages.errors


def test_segment_slice_matches_the_key_slice_of_a_volume_run(slicer_core, cases_dir, logic, vtk_messages):
    volume, _label, matrix = loadCase(slicer_core, cases_dir, CORD)
    roi = roiForIndexRange(slicer_core, matrix, CORD_LO, CORD_HI)
    mask, info = logic.computeMask(volume, roi, keySlice=26)
    assert info["keySlice"] == 26 and info["slices"][0] == 26
    box2d = geometry.in_plane(info["box"], "k")
    assert np.array_equal(logic.segmentSlice(volume, "k", 26, box2d), mask[26])
    assert np.array_equal(logic.segmentSlice(volume, "k", 26, roi), mask[26])
    with pytest.raises(InputError, match="does not cross"):
        logic.segmentSlice(volume, "k", 40, roi)
    assert not vtk_messages.errors


# -- applying through the Segment Editor logic ----------------------------------------------
OVERWRITE = {
    "all": ("OverwriteAllSegments", {"Area", "Visible", "Hidden"}),
    "visible": ("OverwriteVisibleSegments", {"Area", "Visible"}),
    "none": ("OverwriteNone", set()),
}


@pytest.mark.parametrize("overwrite, applyMode, intensityRange", [
    ("all", "set", None), ("visible", "set", None), ("none", "set", None), ("all", "add", (500, 5000)),
])
def test_apply_with_editor_logic_honours_masking_and_undo(slicer_core, cases_dir, logic, vtk_messages,
                                                           overwrite, applyMode, intensityRange):
    volume, _label, matrix = loadCase(slicer_core, cases_dir, CORD)
    voxels = mrml_io.volumeArray(volume)
    shape = voxels.shape
    roi = roiForIndexRange(slicer_core, matrix, CORD_LO, CORD_HI)
    predicted, _info = logic.computeMask(volume, roi)
    segmentation = slicer_core.addSegmentation(referenceVolume=volume)
    old = {
        "Area": blob(shape, (18, 24, 25), (26, 38, 27)),  # editable area: left part of the ROI
        "Visible": blob(shape, (24, 28, 25), (34, 34, 27)),
        "Hidden": blob(shape, (20, 30, 26), (30, 36, 26)),
        "Target": blob(shape, (20, 24, 25), (24, 26, 27)) | blob(shape, (10, 10, 10), (12, 12, 12)),
    }
    ids = {name: logic.writeMaskToSegment(mask, volume, segmentation, name) for name, mask in old.items()}
    segmentation.GetDisplayNode().SetSegmentVisibility(ids["Hidden"], False)
    editor, editorNode = slicer_core.addSegmentEditor(segmentation, volume)
    editorNode.SetSelectedSegmentID(ids["Target"])
    editorNode.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editorNode.SetMaskSegmentID(ids["Area"])
    editorNode.SetOverwriteMode(getattr(slicer.vtkMRMLSegmentEditorNode, OVERWRITE[overwrite][0]))
    editable = old["Area"].astype(bool)
    if intensityRange:
        editorNode.SetSourceVolumeIntensityMask(True)
        editorNode.SetSourceVolumeIntensityMaskRange(*intensityRange)
        editable &= (voxels >= intensityRange[0]) & (voxels <= intensityRange[1])
    before = segmentsByName(segmentation, volume)

    logic.applyWithEditorLogic(editor, predicted, volume, applyMode)

    painted = predicted.astype(bool) & editable
    assert painted.any() and (predicted.astype(bool) & ~editable).any()  # the mask really cuts
    after = {name: mask.astype(bool) for name, (_id, mask) in segmentsByName(segmentation, volume).items()}
    target = old["Target"].astype(bool)
    if applyMode == "set":
        expectedTarget = painted | (target & ~editable)
    else:
        expectedTarget = painted | target
    assert np.array_equal(after["Target"], expectedTarget)
    for name in ("Area", "Visible", "Hidden"):
        expected = old[name].astype(bool)
        if name in OVERWRITE[overwrite][1]:
            expected = expected & ~painted
        assert np.array_equal(after[name], expected), name

    assert editor.CanUndo()
    editor.Undo()
    assertSameSegments(before, segmentsByName(segmentation, volume))
    assert not vtk_messages.errors


def test_apply_with_editor_logic_rejects_bad_input(slicer_core, cases_dir, logic, vtk_messages):
    volume, _label, _matrix = loadCase(slicer_core, cases_dir, CORD)
    shape = mrml_io.volumeArray(volume).shape
    segmentation = slicer_core.addSegmentation(referenceVolume=volume)
    editor, editorNode = slicer_core.addSegmentEditor(segmentation, volume)
    mask = blob(shape, (20, 20, 20), (30, 30, 30))
    with pytest.raises(InputError, match="Select"):
        logic.applyWithEditorLogic(editor, mask, volume)
    editorNode.SetSelectedSegmentID(logic.writeMaskToSegment(mask * 0, volume, segmentation, "Target"))
    with pytest.raises(InputError, match="mode"):
        logic.applyWithEditorLogic(editor, mask, volume, "paint")
    with pytest.raises(InputError, match="shape"):
        logic.applyWithEditorLogic(editor, mask[:-1], volume)
    assert not editor.CanUndo()
    assert not vtk_messages.errors


# -- writing segments and files -------------------------------------------------------------
def test_write_mask_into_transformed_or_other_geometry(slicer_core, vtk_messages):
    shape = (12, 14, 16)
    ijkToRas = rigid(rotation((1, 0, 1), 20) @ np.diag([1.0, 1.5, 2.0]), (3, 4, 5))
    volume = slicer_core.addVolume(np.zeros(shape, np.int16), ijkToRas, "vol")
    transform = slicer_core.addLinearTransform(rigid(rotation((0, 0, 1), 35), (10, 0, -4)))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    mask = blob(shape, (3, 4, 2), (9, 10, 6))
    logic = MedSAMLogic(predictor=object())  # no model needed to write

    # segmentation without geometry, not transformed: gets the volume's (through the transform)
    plain = slicer_core.addSegmentation("plain")
    plainId = logic.writeMaskToSegment(mask, volume, plain, "m")
    assert np.array_equal(mrml_io.readSegmentMask(plain, plainId, volume), mask)
    assert np.array_equal(slicer_core.segmentArray(plain, plainId, volume), mask)

    # segmentation on a grid of half the voxel size: resampled (nearest) into its geometry
    fineMatrix = rigid(ijkToRas[:3, :3] / 2, ijkToRas[:3, 3] - ijkToRas[:3, :3] @ (0.25, 0.25, 0.25))
    fine = slicer_core.addVolume(np.zeros((24, 28, 32), np.int16), fineMatrix, "fine")
    fine.SetAndObserveTransformNodeID(transform.GetID())
    fineSegmentation = slicer_core.addSegmentation("fine", referenceVolume=fine)
    fineId = logic.writeMaskToSegment(mask, volume, fineSegmentation, "m")
    assert np.array_equal(mrml_io.readSegmentMask(fineSegmentation, fineId, volume), mask)
    assert mrml_io.readSegmentMask(fineSegmentation, fineId, fine).sum() == 8 * mask.sum()

    with pytest.raises(InputError, match="shape"):
        logic.writeMaskToSegment(mask[1:], volume, plain, "m")
    assert not vtk_messages.errors


def test_written_segments_are_visible_on_a_bare_segmentation_node(slicer_core, vtk_messages):
    """The console example's AddNewNodeByClass("vtkMRMLSegmentationNode") has no display node, and
    the batch panel may be given one like it: the result must still show in the views."""
    shape = (6, 8, 8)
    volume = slicer_core.addVolume(np.zeros(shape, np.int16), np.eye(4), "vol")
    bare = slicer_core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "bare")
    assert bare.GetDisplayNode() is None
    MedSAMLogic(predictor=object()).writeMaskToSegment(blob(shape, (1, 1, 1), (4, 5, 5)), volume, bare, "m")
    display = bare.GetDisplayNode()
    assert display is not None and display.GetVisibility() and display.GetVisibility2D()
    assert not vtk_messages.errors


def test_save_segmentation_reloads_identically(slicer_core, cases_dir, logic, tmp_path, vtk_messages):
    volume, _label, matrix = loadCase(slicer_core, cases_dir, CORD)
    shape = mrml_io.volumeArray(volume).shape
    segmentation = slicer_core.addSegmentation()
    logic.segment(volume, roiForIndexRange(slicer_core, matrix, CORD_LO, CORD_HI), segmentation, "cord")
    logic.writeMaskToSegment(blob(shape, (2, 2, 2), (8, 8, 8)), volume, segmentation, "box")
    written = segmentsByName(segmentation, volume)
    path = tmp_path / "new" / "folder" / "result.seg.nrrd"

    assert logic.saveSegmentation(segmentation, path) == str(path)
    reloaded = slicer_core.segmentationsLogic.LoadSegmentationFromFile(str(path), False, "reloaded")
    again = segmentsByName(reloaded, volume)
    assert list(again) == ["cord", "box"]
    for name in written:
        assert np.array_equal(again[name][1], written[name][1]), name
    assert os.listdir(path.parent) == ["result.seg.nrrd"]  # no temporary file left

    content = path.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        logic.saveSegmentation(segmentation, path)
    assert path.read_bytes() == content
    logic.writeMaskToSegment(np.zeros(shape, np.uint8), volume, segmentation, "box")
    logic.saveSegmentation(segmentation, path, overwrite=True)
    assert path.read_bytes() != content

    blocker = tmp_path / "blocked.seg.nrrd"
    blocker.mkdir()  # renaming onto a folder fails after the temporary file was written
    with pytest.raises(OutputError):
        logic.saveSegmentation(segmentation, blocker, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["blocked.seg.nrrd", "new"] and not os.listdir(blocker)
    with pytest.raises(InputError, match=".seg.nrrd"):
        logic.saveSegmentation(segmentation, tmp_path / "result.nii.gz")
    assert not vtk_messages.errors


def test_converter_rules_stay_unique_across_scenes():
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    cores = [slicercore.SlicerCore() for _ in range(3)]
    names = [rule.GetClassName() for rule in factory.GetConverterRules()]
    for core in cores:
        core.close()
    assert len(names) == len(set(names)) and "vtkBinaryLabelmapToClosedSurfaceConversionRule" in names


# -- settings ------------------------------------------------------------------------------
def test_settings_round_trip_through_strings_and_shared_predictor(predictor):
    settings = MedSAMSettings(device="CPU", cache_mb="256", propagation_mode="official")
    stored = {key: str(value) for key, value in settings.to_dict().items()}  # as QSettings may return
    stored["from_a_newer_version"] = "1"
    assert MedSAMSettings.from_dict(stored) == settings
    assert MedSAMSettings.from_dict({}) == MedSAMSettings()
    for bad in [{"device": "tpu"}, {"precision": "int4"}, {"propagation_mode": "fast"}, {"cache_mb": "lots"}, {"model": "nope"}]:
        with pytest.raises(InputError):
            MedSAMSettings.from_dict(bad)
    # the logic's default mode comes from its settings
    assert MedSAMLogic(settings=settings, predictor=predictor).settings.propagation_mode == "official"
    # one shared model for equal settings, a new one when they differ
    assert shared_predictor(MedSAMSettings()) is predictor
    assert MedSAMLogic().predictor is predictor
    small = MedSAMSettings(cache_mb=64)
    assert shared_predictor(small) is predictor and predictor.cache.max_bytes == 64 * 2**20
    shared_predictor(MedSAMSettings())
    assert predictor.cache.max_bytes == 1024 * 2**20
