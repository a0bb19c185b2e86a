"""The MedSAM effect's MRML side: a volume-voxel mask as a labelmap on the Segment Editor's grid, the
slab of processed slices, and the translucent preview segmentation.

Qt-free (MRML + numpy). The model runs on the source volume's own voxels (like the CLI); the mask is then
resampled onto the Segment Editor's grid, because masking and the editable intensity range compare the
modifier labelmap voxel by voxel with that grid. Main thread only (MRML).
"""

import numpy as np
import slicer
import vtk

from .. import mrml_io
from ..errors import InputError
from .prompts import AXIS_POSITION


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
