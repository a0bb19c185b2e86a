"""What the MedSAM effect does besides Qt: box prompts, slice ranges, modifier labelmap, preview node.

Qt-free (MRML + numpy), so it runs under pytest with slicer-core; SegmentEditorEffect.py only maps
widgets and mouse events onto these functions. The model runs on the source volume's own voxels
(through MedSAMLogic, like the CLI and the batch panel) and the mask is then resampled onto the Segment
Editor's grid, because masking and the editable intensity range compare the modifier labelmap voxel
by voxel with that grid.
"""

from dataclasses import dataclass

import numpy as np
import slicer
import vtk

from MedSAMSegmentLib import geometry, mrml_io
from MedSAMSegmentLib.errors import InputError

MODES = ("slice", "propagate")  # this slice only | propagate through a slice range
RANGES = ("roi", "around", "volume")  # the prompt's own slices | N slices each side | the whole volume
APPLY_MODES = ("add", "set")  # add to the segment | replace the segment in the processed slices
AXIS_POSITION = {"i": 0, "j": 1, "k": 2}


@dataclass(frozen=True)
class BoxPrompt:
    """A box in the source volume's voxel indices: (i0, j0, k0, i1, j1, k1) inclusive, and the
    index axis the slices are taken along. A drawn box spans one slice; an ROI box its slices."""

    axis: str
    box: tuple

    def toParameter(self):
        return f"{self.axis}:{','.join(str(int(v)) for v in self.box)}"

    @classmethod
    def fromParameter(cls, text):
        """The prompt stored by toParameter, or None for an empty string."""
        text = (text or "").strip()
        if not text:
            return None
        axis, _, values = text.partition(":")
        try:
            box = tuple(int(v) for v in values.split(","))
        except ValueError:
            box = ()
        if axis not in AXIS_POSITION or len(box) != 6:
            raise InputError(f"Stored box {text!r} is not 'axis:i0,j0,k0,i1,j1,k1'")
        return cls(axis, box)

    @property
    def sliceRange(self):
        return geometry.slice_range(self.box, self.axis)

    @property
    def keySlice(self):
        """The slice a drawn box was drawn on; the middle slice of an ROI (the official start)."""
        first, last = self.sliceRange
        return int((last - first) / 2 + first)


def boxFromRasCorners(volumeNode, rasA, rasB, sliceNormalRas):
    """BoxPrompt of a rectangle dragged from rasA to rasB in a slice view whose normal is
    sliceNormalRas (world RAS). The slice axis is the volume axis closest to the view normal; the
    slice is the one under the first corner (where the drag started)."""
    ijkToWorld = mrml_io.volumeIjkToWorldMatrix(volumeNode)
    shape = mrml_io.volumeArray(volumeNode).shape
    axis = geometry.closest_index_axis(ijkToWorld, sliceNormalRas)
    worldToIjk = np.linalg.inv(ijkToWorld)
    a = np.rint((worldToIjk @ np.r_[np.asarray(rasA, float)[:3], 1.0])[:3])
    b = np.rint((worldToIjk @ np.r_[np.asarray(rasB, float)[:3], 1.0])[:3])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    position = AXIS_POSITION[axis]
    lo[position] = hi[position] = a[position]
    dims = np.array(shape[::-1]) - 1
    if a[position] < 0 or a[position] > dims[position]:
        raise InputError("The box was drawn on a slice outside the source volume")
    lo, hi = np.clip(lo, 0, dims), np.clip(hi, 0, dims)
    box = tuple(int(v) for v in np.r_[lo, hi])
    return BoxPrompt(axis, tuple(geometry.validate_index_box(box, shape, axis)))


def roiPrompt(logic, volumeNode, roiNode):
    """BoxPrompt of a markups ROI on the volume (its voxel range, slices along the ROI's z axis)."""
    request = logic.prepare(volumeNode, roiNode=roiNode)
    return BoxPrompt(request.axis, tuple(int(v) for v in request.box))


def requestBox(prompt, mode, rangeMode, around, shapeKji):
    """(index box, key slice) to segment: the prompt's in-plane box over the slices that mode and
    range ask for. "slice": only the key slice. "propagate": the prompt's own slices ("roi"),
    `around` slices each side of the key slice ("around"), or every slice ("volume")."""
    if mode not in MODES:
        raise InputError(f"Unknown mode {mode!r}: use one of {', '.join(MODES)}")
    key = prompt.keySlice
    count = shapeKji[2 - AXIS_POSITION[prompt.axis]]  # slices along the axis: K for k, J for j, I for i
    if mode == "slice":
        first = last = key
    elif rangeMode == "roi":
        first, last = prompt.sliceRange
    elif rangeMode == "around":
        first, last = max(0, key - int(around)), min(count - 1, key + int(around))
    elif rangeMode == "volume":
        first, last = 0, count - 1
    else:
        raise InputError(f"Unknown slice range {rangeMode!r}: use one of {', '.join(RANGES)}")
    box = list(prompt.box)
    position = AXIS_POSITION[prompt.axis]
    box[position], box[position + 3] = first, last
    return tuple(box), key


def maskToLabelmap(maskKji, volumeNode, segmentationNode, referenceImage):
    """uint8 vtkOrientedImageData of a volume-voxel mask on referenceImage's grid (the Segment
    Editor's aligned source volume), resampled nearest-neighbour; only the mask's bounding box is
    converted, the result covers the reference extent."""
    mask = np.asarray(maskKji)
    if mask.shape != mrml_io.volumeArray(volumeNode).shape:
        raise InputError(f"Mask shape {mask.shape} differs from volume '{volumeNode.GetName()}'")
    imageToSegmentation = mrml_io.volumeToSegmentationMatrix(volumeNode, segmentationNode)
    found = np.argwhere(mask)
    if found.size:
        (k0, j0, i0), (k1, j1, i1) = found.min(axis=0), found.max(axis=0)
    else:
        k0 = j0 = i0 = k1 = j1 = i1 = 0
    part = mrml_io.orientedImage(mask[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] > 0, imageToSegmentation, (i0, j0, k0))
    labelmap = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        part, referenceImage, labelmap, False, False)
    return labelmap


def slabLabelmap(box, axis, volumeNode, segmentationNode, referenceImage):
    """Labelmap of ones on referenceImage's grid over the processed slices of the volume (the box's
    slices along `axis`, each whole). "Replace in the processed slices" removes this slab from the
    segment, then adds the mask: the editor's "set" mode would clear the segment everywhere."""
    position = AXIS_POSITION[axis]
    dims = np.array(mrml_io.volumeArray(volumeNode).shape[::-1]) - 1
    lo = [box[p] if p == position else 0 for p in range(3)]
    hi = [box[p + 3] if p == position else int(dims[p]) for p in range(3)]
    volumeToReference = np.linalg.inv(_imageToWorld(referenceImage)) @ mrml_io.volumeToSegmentationMatrix(
        volumeNode, segmentationNode)
    corners = np.array([[x, y, z, 1.0] for x in (lo[0] - 0.5, hi[0] + 0.5) for y in (lo[1] - 0.5, hi[1] + 0.5)
                        for z in (lo[2] - 0.5, hi[2] + 0.5)])
    inReference = (volumeToReference @ corners.T).T[:, :3]
    extent = np.array(referenceImage.GetExtent())
    first = np.maximum(np.ceil(inReference.min(axis=0) - 1e-6).astype(int), extent[0::2])
    last = np.minimum(np.floor(inReference.max(axis=0) + 1e-6).astype(int), extent[1::2])
    slab = slicer.vtkOrientedImageData()
    slab.SetImageToWorldMatrix(mrml_io.toVtkMatrix(_imageToWorld(referenceImage)))
    slab.SetExtent(int(first[0]), int(last[0]), int(first[1]), int(last[1]), int(first[2]), int(last[2]))
    slab.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    slab.GetPointData().GetScalars().Fill(1)
    return slab


def _imageToWorld(image):
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return mrml_io.toNumpyMatrix(matrix)


# -- preview node ---------------------------------------------------------------------------------
PREVIEW_SUFFIX = " preview"
PREVIEW_OPACITY = 0.5


def createPreviewNode(scene, segmentationNode):
    """A separate, translucent segmentation node "<segmentation> preview" on the same geometry and
    transform as segmentationNode, as Grow from seeds does: nothing is written until Apply."""
    previewNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", segmentationNode.GetName() + PREVIEW_SUFFIX)
    previewNode.CreateDefaultDisplayNodes()
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    previewNode.GetSegmentation().SetConversionParameter(name, segmentationNode.GetSegmentation().GetConversionParameter(name))
    transformNode = segmentationNode.GetParentTransformNode()
    if transformNode is not None:
        previewNode.SetAndObserveTransformNodeID(transformNode.GetID())
    previewDisplayNode = previewNode.GetDisplayNode()
    previewDisplayNode.SetOpacity(PREVIEW_OPACITY)
    previewDisplayNode.SetVisibility2DOutline(True)
    return previewNode


def updatePreview(previewNode, labelmap, segmentName, color):
    """Show labelmap as the preview's single segment (named and coloured like the target)."""
    segmentation = previewNode.GetSegmentation()
    segmentIds = vtk.vtkStringArray()
    segmentation.GetSegmentIDs(segmentIds)
    segmentId = segmentIds.GetValue(0) if segmentIds.GetNumberOfValues() else segmentation.AddEmptySegment("", segmentName, color)
    if not segmentId:
        raise RuntimeError("Cannot add a segment to the preview: segmentation converter rules are missing")
    segment = segmentation.GetSegment(segmentId)
    segment.SetName(segmentName)
    segment.SetColor(color)
    if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            labelmap, previewNode, segmentId, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE):
        raise RuntimeError(f"Cannot show the preview in '{previewNode.GetName()}'")
    return segmentId
