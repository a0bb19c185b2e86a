"""MRML in and out for MedSAMLogic: node geometry, masks <-> segments, .seg.nrrd files.

Qt-free (works with the PyPI slicer-core wheel as well as inside Slicer). Everything here
touches MRML and must run on the main thread.
"""

import os
import uuid

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from ..errors import InputError, OutputError


def toNumpyMatrix(matrix):
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def toVtkMatrix(array):
    matrix = vtk.vtkMatrix4x4()
    values = np.asarray(array, dtype=float).reshape(4, 4)
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, values[row, column])
    return matrix


def nodeToWorldMatrix(node, what="node"):
    """4x4 from a transformable node's coordinates to world; InputError if not linear."""
    transformNode = node.GetParentTransformNode()
    if transformNode is None:
        return np.eye(4)
    if not transformNode.IsTransformToWorldLinear():
        raise InputError(
            f"{what} '{node.GetName()}' is under a non-linear transform ('{transformNode.GetName()}'): "
            "harden the transform first"
        )
    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(matrix)
    return toNumpyMatrix(matrix)


def volumeIjkToWorldMatrix(volumeNode):
    """4x4 from the volume's voxel indices to world RAS, parent transforms included."""
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    return nodeToWorldMatrix(volumeNode, "Volume") @ toNumpyMatrix(ijkToRas)


def volumeArray(volumeNode):
    """(K, J, I) numpy view of a scalar volume's voxels (no copy)."""
    if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError("A scalar volume node is required")
    image = volumeNode.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"Volume '{volumeNode.GetName()}' has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"Volume '{volumeNode.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel; "
            "a scalar volume is required"
        )
    shape = tuple(reversed(image.GetDimensions()))
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)


def roiObjectToWorldAndSize(roiNode):
    """(4x4 ROI object -> world, size along the ROI's own axes) of a markups ROI node."""
    if roiNode is None or not roiNode.IsA("vtkMRMLMarkupsROINode"):
        raise InputError("A markups ROI node (vtkMRMLMarkupsROINode) is required")
    if roiNode.GetInsideOut():
        from ..engine.geometry import INSIDE_OUT_ROI

        raise InputError(f"ROI '{roiNode.GetName()}': {INSIDE_OUT_ROI}")
    nodeToWorldMatrix(roiNode, "ROI")  # rejects non-linear parents; the matrix below includes them
    return toNumpyMatrix(roiNode.GetObjectToWorldMatrix()), np.array(roiNode.GetSize(), dtype=float)


def orientedImage(arrayKji, imageToWorld, extentOffset=(0, 0, 0)):
    """vtkOrientedImageData (uint8 copy) of a (K, J, I) array whose voxel (0, 0, 0) is at
    index extentOffset (i, j, k) of the grid imageToWorld describes."""
    array = np.ascontiguousarray(arrayKji, dtype=np.uint8)
    image = slicer.vtkOrientedImageData()
    i0, j0, k0 = (int(v) for v in extentOffset)
    kn, jn, iN = array.shape
    image.SetExtent(i0, i0 + iN - 1, j0, j0 + jn - 1, k0, k0 + kn - 1)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(toVtkMatrix(imageToWorld))
    return image


def resampleNearest(image, reference):
    """image on reference's grid and extent (nearest neighbour: exact on the same grid)."""
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(image, reference, resampled, False, False)
    return resampled


def volumeToSegmentationMatrix(volumeNode, segmentationNode):
    """4x4 from the volume's voxel indices to the segmentation node's own coordinates."""
    segmentationToWorld = nodeToWorldMatrix(segmentationNode, "Segmentation")
    return np.linalg.inv(segmentationToWorld) @ volumeIjkToWorldMatrix(volumeNode)


def _referenceGeometry(segmentationNode):
    """The segmentation's reference geometry as an image without voxels, or None."""
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    serialized = segmentationNode.GetSegmentation().GetConversionParameter(name)
    if not serialized:
        return None
    geometry = slicer.vtkOrientedImageData()
    if not slicer.vtkSegmentationConverter.DeserializeImageGeometry(serialized, geometry, False):
        return None
    return geometry


def _boundingBox(mask):
    """(i0, j0, k0, i1, j1, k1) of the non-zero voxels, or None."""
    found = [np.flatnonzero(mask.any(axis=other)) for other in ((0, 1), (0, 2), (1, 2))]
    if any(f.size == 0 for f in found):
        return None
    (i, j, k) = found
    return (i[0], j[0], k[0], i[-1], j[-1], k[-1])


def _segmentationLabelmapReady(segmentationNode):
    segmentation = segmentationNode.GetSegmentation()
    labelmapName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if segmentation.GetSourceRepresentationName() != labelmapName:
        if segmentation.GetNumberOfSegments():
            raise InputError(
                f"Segmentation '{segmentationNode.GetName()}' stores {segmentation.GetSourceRepresentationName()}; "
                "MedSAM writes binary labelmaps"
            )
        segmentation.SetSourceRepresentationName(labelmapName)


def writeMaskToSegment(maskKji, volumeNode, segmentationNode, segmentName):
    """Replace the segment named segmentName (created if missing) with a mask on the volume's
    voxels; every other segment is left as it was. Returns the segment ID.

    The mask is placed with the volume's IJK-to-RAS and the transforms between volume and
    segmentation, then resampled (nearest) into the segmentation's reference geometry when it
    is a different grid. A segmentation without reference geometry gets the volume's.
    """
    mask = np.asarray(maskKji)
    shape = volumeArray(volumeNode).shape
    if mask.shape != shape:
        raise InputError(f"Mask shape {mask.shape} differs from the volume's {shape}")
    if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
        raise InputError("A segmentation node is required")
    if not segmentName:
        raise InputError("A segment name is required")
    imageToSegmentation = volumeToSegmentationMatrix(volumeNode, segmentationNode)
    _segmentationLabelmapReady(segmentationNode)
    if _referenceGeometry(segmentationNode) is None:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    reference = _referenceGeometry(segmentationNode)

    # Only the mask's bounding box travels; replacing a segment drops what lay outside it.
    box = _boundingBox(mask) or (0, 0, 0, 0, 0, 0)
    i0, j0, k0, i1, j1, k1 = box
    image = orientedImage(mask[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] > 0, imageToSegmentation, (i0, j0, k0))
    if not slicer.vtkOrientedImageDataResample.DoGeometriesMatch(image, reference):
        image = resampleNearest(image, reference)

    segmentation = segmentationNode.GetSegmentation()
    segmentId = segmentation.GetSegmentIdBySegmentName(segmentName)
    created = not segmentId
    if created:
        segmentId = segmentation.AddEmptySegment("", segmentName)
        if not segmentId:
            raise RuntimeError("Cannot add a segment: segmentation converter rules are not registered")
    ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentationNode, segmentId, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    )
    if not ok:
        if created:
            segmentation.RemoveSegment(segmentId)
        raise OutputError(f"Could not write segment '{segmentName}' into '{segmentationNode.GetName()}'")
    if segmentationNode.GetDisplayNode() is None:
        # A bare node (the console's AddNewNodeByClass) shows nothing in the views without one; Slicer's
        # own Segmentations module creates them explicitly too.
        segmentationNode.CreateDefaultDisplayNodes()
    return segmentId


def readSegmentMask(segmentationNode, segmentId, volumeNode):
    """uint8 (K, J, I) mask of a segment on the volume's voxels (nearest, exact on the same grid)."""
    labelmap = slicer.vtkOrientedImageData()
    if not segmentationNode.GetSegmentation().GetSegment(segmentId):
        raise InputError(f"Segmentation '{segmentationNode.GetName()}' has no segment with ID {segmentId!r}")
    segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
    shape = volumeArray(volumeNode).shape
    target = orientedImage(np.zeros(shape, np.uint8), volumeToSegmentationMatrix(volumeNode, segmentationNode))
    extent = labelmap.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return np.zeros(shape, np.uint8)
    resampled = resampleNearest(labelmap, target)
    values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(shape)
    return (values > 0).astype(np.uint8)


def saveSegmentation(segmentationNode, path, overwrite=False):
    """Write a segmentation to a .seg.nrrd file, atomically: a temporary file in the same folder
    is renamed over the target, so a failure leaves no partial file. Creates the folder."""
    path = os.path.abspath(os.fspath(path))
    if not path.lower().endswith(".seg.nrrd"):
        raise InputError(f"Segmentation files are saved as .seg.nrrd, got {os.path.basename(path)!r}")
    if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
        raise InputError("A segmentation node is required")
    labelmapName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if segmentationNode.GetSegmentation().GetSourceRepresentationName() != labelmapName:
        raise InputError("Only segmentations stored as binary labelmaps can be saved as .seg.nrrd")
    if os.path.exists(path) and not overwrite:
        raise OutputError(f"{path} exists; choose another name or allow overwriting")
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create folder {folder}: {exc.strerror or exc}") from None
    # Keep the .seg.nrrd ending: the storage node picks the writer from it.
    temporary = os.path.join(folder, f".{os.path.basename(path)[:-9]}.{uuid.uuid4().hex}.seg.nrrd")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(temporary)
    storage.SetUseCompression(True)
    try:
        if not storage.WriteData(segmentationNode) or not os.path.isfile(temporary):
            raise OutputError(f"Could not write {path}")
        os.replace(temporary, path)
    except OSError as exc:
        raise OutputError(f"Could not write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
