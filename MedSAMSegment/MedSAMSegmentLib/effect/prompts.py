"""Box prompts of the MedSAM effect: a box drawn in a slice view, or a markups ROI, as a voxel index box.

Qt-free (numpy + the volume node's geometry). A drawn rectangle is a rectangle in the *view*; when the
view is not aligned with the volume's axes (a RAS-aligned view of a rotated or oblique volume, a
reformatted view) its four corners land on four different index positions, so the index box is the
bounding box of all four, not of two opposite corners.
"""

from dataclasses import dataclass

import numpy as np

from ..engine import geometry
from ..errors import InputError
from ..mrml_bridge import mrml_io

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

    @property
    def inPlaneBox(self):
        """(x0, y0, x1, y1) in the slice's 2D pixel coordinates (docs/ARCHITECTURE.md)."""
        return tuple(int(v) for v in geometry.in_plane(self.box, self.axis))


def boxFromRasCorners(volumeNode, rasCorners, sliceNormalRas):
    """BoxPrompt of a rectangle drawn in a slice view: rasCorners are its four corners in world RAS
    (as xyToRas gives them), sliceNormalRas the view's normal. The slice axis is the volume axis
    closest to the normal; the slice is the one under the rectangle's centre; the in-plane box is
    the bounding box of the four corners' voxel indices, intersected with the volume."""
    corners = np.asarray(rasCorners, dtype=float).reshape(-1, 3)
    if len(corners) < 2:
        raise InputError("A box needs its corners")
    ijkToWorld = mrml_io.volumeIjkToWorldMatrix(volumeNode)
    shape = mrml_io.volumeArray(volumeNode).shape
    axis = geometry.closest_index_axis(ijkToWorld, sliceNormalRas)
    worldToIjk = np.linalg.inv(ijkToWorld)
    ijk = (worldToIjk @ np.c_[corners, np.ones(len(corners))].T).T[:, :3]
    position = AXIS_POSITION[axis]
    dims = np.array(shape[::-1]) - 1
    sliceIndex = int(np.rint(ijk[:, position].mean()))
    if not 0 <= sliceIndex <= dims[position]:
        raise InputError("The box was drawn on a slice outside the source volume")
    indices = np.rint(ijk)
    lo, hi = indices.min(axis=0), indices.max(axis=0)
    if np.any(hi < 0) or np.any(lo > dims):
        raise InputError("The box lies outside the source volume")
    lo, hi = np.clip(lo, 0, dims), np.clip(hi, 0, dims)
    lo[position] = hi[position] = sliceIndex
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
