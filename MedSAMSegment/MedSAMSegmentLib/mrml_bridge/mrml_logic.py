"""MedSAMLogic: volume + ROI + segmentation nodes in, segment out (Qt-free).

Every call is split in three steps so the slow middle one can run in a worker thread:
prepare() reads MRML (main thread), run() is pure numpy + the engine (any thread), and the
write step (writeMaskToSegment / applyWithEditorLogic) touches MRML again (main thread).
segment() and computeMask() chain them for scripts and tests.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import slicer

from ..engine import geometry
from ..engine.intensity import auto_window, explicit_window
from ..engine.propagation import MODES, segment_slice, segment_volume
from ..errors import InputError
from ..settings import MedSAMSettings, shared_predictor
from . import mrml_io

DEFAULT_SEGMENT_NAME = "MedSAM"
SUPERIOR = (0.0, 0.0, 1.0)


@dataclass
class SegmentationRequest:
    """Everything run() needs, read from MRML by prepare(); holds no MRML object."""

    volume: np.ndarray  # (K, J, I) view of the volume's voxels
    windowSpec: tuple  # ("explicit", level, width) | ("auto", modality or None)
    box: tuple  # inclusive (i0, j0, k0, i1, j1, k1)
    axis: str
    keySlice: int = None
    mode: str = "default"
    info: dict = field(default_factory=dict)
    addBoxes: list = field(default_factory=list)  # [(slice, (x0, y0, x1, y1)), ...] added key-slice boxes
    window: object = None  # the IntensityWindow of windowSpec for these voxels, if the caller has it already


WINDOW_CHOICES = ("auto", "CT", "MR", "view")  # the official rule (guessed / CT / MR), or the view's W/L


def windowSpec(volumeNode, window):
    """What intensity window to use, decided on the main thread (it may read the display node).

    None and "auto" are MedSAM's own preprocessing (CT window 40/400 or MR percentiles, guessed from
    the voxels), what the model was trained on: Slicer's automatic display window of a CT is about
    W 1800 / L -120, and feeding that to the model cost 0.1-0.2 Dice on CT organs (docs/SLICER.md).
    "view" is the volume's display window/level, an explicit choice."""
    if window is None:
        return ("auto", None)
    if isinstance(window, str):
        choice = window.strip().upper()
        if choice == "VIEW":
            display = volumeNode.GetDisplayNode()
            if display is None or not display.IsA("vtkMRMLScalarVolumeDisplayNode") or not display.GetWindow() > 0:
                raise InputError(f"Volume '{volumeNode.GetName()}' has no display window/level to use")
            return ("explicit", float(display.GetLevel()), float(display.GetWindow()))
        if choice not in ("CT", "MR", "AUTO"):
            raise InputError(f"Unknown window {window!r}: use 'auto', 'CT', 'MR', 'view' or (level, width)")
        return ("auto", None if choice == "AUTO" else choice)
    try:
        level, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"Window must be (level, width), 'auto', 'CT', 'MR' or 'view', got {window!r}") from None
    return ("explicit", level, width)


def intensityWindow(volume, spec):
    """The IntensityWindow of a windowSpec for these voxels (no MRML: may run off the main thread)."""
    if spec[0] == "explicit":
        return explicit_window(volume, spec[1], spec[2])
    return auto_window(volume, modality=spec[1])


def _requestWindow(request):
    if request.window is not None:  # computed once per volume and rule by the caller (the effect's memo)
        return request.window
    try:
        return intensityWindow(request.volume, request.windowSpec)
    except InputError as exc:
        if not request.info.get("labelmap"):
            raise
        raise InputError(
            f"Volume '{request.info.get('volume')}' is a labelmap (segment labels, not intensities): {exc}; "
            "or segment the grey-level volume it was drawn on"
        ) from None


def _requireNode(node, argument, className, what):
    """InputError naming the argument for a missing or wrong node (instead of an AttributeError later)."""
    if node is None or not hasattr(node, "IsA") or not node.IsA(className):
        got = "None" if node is None else getattr(node, "GetClassName", lambda: type(node).__name__)()
        raise InputError(f"{argument} must be {what} ({className}), got {got}")


def _requireVolume(volumeNode):
    _requireNode(volumeNode, "volumeNode", "vtkMRMLScalarVolumeNode", "a scalar volume node")


def _requireSegmentation(segmentationNode):
    _requireNode(segmentationNode, "segmentationNode", "vtkMRMLSegmentationNode", "a segmentation node")


_EDITOR_MODES = {"set": "ModificationModeSet", "add": "ModificationModeAdd", "remove": "ModificationModeRemove"}


class MedSAMLogic:
    """Box-prompted MedSAM / LiteMedSAM segmentation of MRML volumes."""

    def __init__(self, settings=None, predictor=None):
        self.settings = settings or MedSAMSettings()
        self._predictor = predictor

    @property
    def predictor(self):
        """The predictor given at construction, else the process-wide shared one."""
        return self._predictor or shared_predictor(self.settings)

    # -- 1. read MRML (main thread) -----------------------------------------------------
    def prepare(self, volumeNode, roiNode=None, indexBox=None, axis=None, keySlice=None, mode=None, window=None,
                addBoxes=None):
        """Read the nodes into a SegmentationRequest; InputError for anything that cannot run.

        addBoxes: boxes on further key slices (key_boxes.py), each an index box (i0, j0, k0, i1, j1, k1)
        or a markups ROI node, one slice thick along the axis."""
        _requireVolume(volumeNode)
        if roiNode is not None:
            _requireNode(roiNode, "roiNode", "vtkMRMLMarkupsROINode", "a markups ROI node")
        volume = mrml_io.volumeArray(volumeNode)
        ijkToWorld = mrml_io.volumeIjkToWorldMatrix(volumeNode)
        if (roiNode is None) == (indexBox is None):
            raise InputError("Give either an ROI node or an index box")
        if roiNode is not None:
            roiToWorld, roiSize = mrml_io.roiObjectToWorldAndSize(roiNode)
            try:
                box = geometry.roi_index_box(roiToWorld, roiSize, np.linalg.inv(ijkToWorld), volume.shape)
            except InputError as exc:
                raise InputError(f"ROI '{roiNode.GetName()}' on volume '{volumeNode.GetName()}': {exc}") from None
            direction = roiToWorld[:3, 2]  # the ROI's own z axis
        else:
            box = indexBox
            direction = SUPERIOR
        axis = str(axis).lower() if axis else geometry.closest_index_axis(ijkToWorld, direction)
        if axis not in geometry.AXES:
            raise InputError(f"Unknown slice axis {axis!r}: use one of {', '.join(geometry.AXES)}")
        box = geometry.validate_index_box(box, volume.shape, axis)
        first, last = geometry.slice_range(box, axis)
        if keySlice is not None and not first <= int(keySlice) <= last:
            raise InputError(f"Key slice {keySlice} is outside the box's slices {first}..{last} along {axis}")
        mode = mode or self.settings.propagation_mode
        if mode not in MODES:
            raise InputError(f"Unknown propagation mode {mode!r}: use one of {', '.join(MODES)}")
        info = {"volume": volumeNode.GetName(), "box": box, "axis": axis, "mode": mode,
                "labelmap": bool(volumeNode.IsA("vtkMRMLLabelMapVolumeNode"))}
        return SegmentationRequest(volume, windowSpec(volumeNode, window), box, axis,
                                   None if keySlice is None else int(keySlice), mode, info,
                                   self._addedBoxes(addBoxes, volume.shape, ijkToWorld, axis))

    @staticmethod
    def _addedBoxes(addBoxes, shape, ijkToWorld, axis):
        from ..engine.key_boxes import added_boxes_from_index_boxes

        boxes = []
        for n, item in enumerate(addBoxes or ()):
            if hasattr(item, "IsA"):
                if not item.IsA("vtkMRMLMarkupsROINode"):
                    raise InputError(f"addBoxes[{n}] must be an index box or a markups ROI node, "
                                     f"got {item.GetClassName()}")
                roiToWorld, roiSize = mrml_io.roiObjectToWorldAndSize(item)
                try:
                    item = geometry.roi_index_box(roiToWorld, roiSize, np.linalg.inv(ijkToWorld), shape)
                except InputError as exc:
                    raise InputError(f"Added box ROI '{item.GetName()}': {exc}") from None
            boxes.append(item)
        return added_boxes_from_index_boxes(boxes, shape, axis, what="added box")

    # -- 2. compute (any thread, no MRML) -----------------------------------------------
    def run(self, request, progressCallback=None, cancelCallback=None, previous=None):
        """(uint8 (K, J, I) mask, info). CancelledError if cancelCallback() turns True.
        previous: info["result"] of an earlier run; when only added boxes changed, the slices they
        cannot change are taken from it instead of re-run (segment_volume's previous=)."""
        start = time.perf_counter()
        window = _requestWindow(request)
        result = segment_volume(
            self.predictor, request.volume, window, request.box, axis=request.axis,
            key_slice=request.keySlice, mode=request.mode, progress=progressCallback, cancel=cancelCallback,
            add_boxes=request.addBoxes, previous=previous,
        )
        info = dict(request.info, window=window.description, keySlice=result.key_slice,
                    keySlices=list(result.key_slices), fromKey=dict(result.from_key),
                    slices=list(result.slices), stopReasons=dict(result.stop_reasons),
                    seconds=time.perf_counter() - start, result=result, intensityWindow=window)
        return result.mask, info

    # -- chained calls --------------------------------------------------------------------
    def computeMask(self, volumeNode, roiNode=None, indexBox=None, axis=None, keySlice=None, mode=None,
                    window=None, progressCallback=None, cancelCallback=None, addBoxes=None):
        """Segment without writing anything (for previews): (mask (K, J, I) uint8, info)."""
        request = self.prepare(volumeNode, roiNode, indexBox, axis, keySlice, mode, window, addBoxes)
        return self.run(request, progressCallback, cancelCallback)

    def segment(self, volumeNode, roiNode, segmentationNode, segmentName=None, axis=None, keySlice=None,
                mode=None, window=None, progressCallback=None, cancelCallback=None, addBoxes=None):
        """Segment the object in the ROI and write it into the segment named segmentName
        (created if missing); other segments are untouched. Returns the segment ID.
        On cancel (CancelledError) or any error nothing is written."""
        _requireVolume(volumeNode)
        _requireNode(roiNode, "roiNode", "vtkMRMLMarkupsROINode", "a markups ROI node")
        _requireSegmentation(segmentationNode)
        # Fail on an unusable segmentation before the slow part, not after it.
        mrml_io.volumeToSegmentationMatrix(volumeNode, segmentationNode)
        request = self.prepare(volumeNode, roiNode, None, axis, keySlice, mode, window, addBoxes)
        mask, _info = self.run(request, progressCallback, cancelCallback)
        return self.writeMaskToSegment(mask, volumeNode, segmentationNode, segmentName or DEFAULT_SEGMENT_NAME)

    def segmentSlice(self, volumeNode, sliceAxis, sliceIndex, box, window=None):
        """uint8 2D mask of one slice, prompted by a 2D box (x0, y0, x1, y1) in that slice's
        pixels or by an ROI node (its in-plane extent; the slice must cross the ROI)."""
        _requireVolume(volumeNode)
        if box is None:
            raise InputError("box must be a 2D box (x0, y0, x1, y1) or a markups ROI node, got None")
        volume = mrml_io.volumeArray(volumeNode)
        if sliceAxis not in geometry.AXES:
            raise InputError(f"Unknown slice axis {sliceAxis!r}: use one of {', '.join(geometry.AXES)}")
        if hasattr(box, "IsA"):
            request = self.prepare(volumeNode, roiNode=box, axis=sliceAxis, window=window)
            first, last = geometry.slice_range(request.box, sliceAxis)
            if not first <= int(sliceIndex) <= last:
                raise InputError(
                    f"Slice {sliceIndex} along {sliceAxis} does not cross ROI '{box.GetName()}' ({first}..{last})"
                )
            box2d = geometry.in_plane(request.box, sliceAxis)
            spec = request.windowSpec
        else:
            box2d = box
            spec = windowSpec(volumeNode, window)
        window = intensityWindow(volume, spec)
        return segment_slice(self.predictor, volume, window, sliceAxis, int(sliceIndex), box2d)

    # -- 3. write MRML (main thread) --------------------------------------------------------
    def writeMaskToSegment(self, maskKji, volumeNode, segmentationNode, segmentName=DEFAULT_SEGMENT_NAME):
        _requireVolume(volumeNode)
        _requireSegmentation(segmentationNode)
        return mrml_io.writeMaskToSegment(maskKji, volumeNode, segmentationNode, segmentName)

    def applyWithEditorLogic(self, editorLogic, maskKji, volumeNode, mode="set"):
        """Apply a mask to the Segment Editor's selected segment as the effect's Apply does:
        one undo state, then ModifySegmentByLabelmap, which honours the editable area,
        the editable intensity range and the overwrite mode. mode: "set", "add" or "remove"."""
        if editorLogic is None:
            raise InputError("editorLogic must be the Segment Editor's logic, got None")
        _requireVolume(volumeNode)
        if str(mode).lower() not in _EDITOR_MODES:
            raise InputError(f"Unknown apply mode {mode!r}: use one of {', '.join(_EDITOR_MODES)}")
        modificationMode = getattr(slicer.vtkSlicerSegmentEditorLogic, _EDITOR_MODES[str(mode).lower()])
        segmentationNode = editorLogic.GetSegmentationNode()
        segmentId = editorLogic.GetCurrentSegmentID()
        if segmentationNode is None or not segmentId:
            raise InputError("Select a segmentation and a segment in the Segment Editor first")
        mask = np.asarray(maskKji)
        if mask.shape != mrml_io.volumeArray(volumeNode).shape:
            raise InputError(f"Mask shape {mask.shape} differs from volume '{volumeNode.GetName()}'")
        if not editorLogic.ResetModifierLabelmapToDefault():
            raise InputError("The Segment Editor has no geometry yet: select a source volume")
        modifier = editorLogic.GetModifierLabelmap()
        image = mrml_io.orientedImage(mask > 0, mrml_io.volumeToSegmentationMatrix(volumeNode, segmentationNode))
        # The modifier must keep the editor's grid: masking compares it voxel by voxel.
        modifier.DeepCopy(mrml_io.resampleNearest(image, modifier))
        editorLogic.SaveStateForUndo()
        editorLogic.ModifySegmentByLabelmap(segmentationNode, segmentId, modifier, modificationMode, True, False)
        return segmentId

    def saveSegmentation(self, segmentationNode, path, overwrite=False):
        _requireSegmentation(segmentationNode)
        return mrml_io.saveSegmentation(segmentationNode, path, overwrite)
