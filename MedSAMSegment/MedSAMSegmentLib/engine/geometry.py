"""Index axes, axis choice and ROI -> voxel index box (pure numpy, no Slicer).

Conventions (docs/ARCHITECTURE.md): arrays are (K, J, I); index boxes are
(i0, j0, k0, i1, j1, k1) inclusive; a slice along axis "k" is vol[k, :, :] with x = i, y = j,
along "j" vol[:, j, :] with x = i, y = k, along "i" vol[:, :, i] with x = j, y = k.
"""

import numpy as np

from ..errors import InputError
from .slicing import AXES, numpy_axis, split_box, validate_box

__all__ = ["AXES", "numpy_axis", "closest_index_axis", "roi_index_box", "validate_index_box", "in_plane", "slice_range"]

# A voxel centre this close (mm) outside an ROI face still counts as inside: ROIs snapped to
# voxel centres must not lose a row to floating-point error from the matrix chain.
INSIDE_TOLERANCE_MM = 1e-6

# Voxel centres tested at once when tightening the box (bounds memory for huge ROIs).
_CHUNK_VOXELS = 1 << 20

# Why an inside-out ROI is refused, in the CLI (ROI files) and the MRML API (ROI nodes) alike.
INSIDE_OUT_ROI = "an inside-out ROI selects everything but a box; it cannot be a box prompt"


def closest_index_axis(ijk_to_ras, direction_ras):
    """The index axis whose RAS direction is most parallel (either sign) to direction_ras.

    Ties (a direction exactly between two axes) go to k, then j, then i, so an ambiguous
    oblique view still segments axial slices of a typical scan.
    """
    columns = np.asarray(ijk_to_ras, dtype=float)[:3, :3]
    direction = np.asarray(direction_ras, dtype=float).reshape(3)
    norms = np.linalg.norm(columns, axis=0)
    if not np.all(np.isfinite(columns)) or np.any(norms == 0) or not np.any(direction):
        raise InputError("Cannot choose a slice axis: degenerate IJK-to-RAS matrix or direction")
    scores = np.abs(direction @ columns) / (norms * np.linalg.norm(direction))
    best = scores.max()
    for position in (2, 1, 0):
        if scores[position] >= best - 1e-9:
            return AXES[position]
    raise AssertionError("unreachable")


def _inside(points_object, half_size):
    """Which points (..., 3) in ROI object coordinates lie inside the box of half_size."""
    return np.all(np.abs(points_object) <= half_size + INSIDE_TOLERANCE_MM, axis=-1)


def _first_slab_with_voxel(ijk_to_object, half_size, lo, hi, axis, reverse):
    """Index along `axis` (0 = i, 1 = j, 2 = k) of the first slab, walking from lo[axis]
    upwards (or from hi[axis] downwards), holding a voxel centre inside the ROI; None if none.

    Only the other two axes' ranges [lo, hi] are tested in each slab, in chunks of at most
    _CHUNK_VOXELS points (several small slabs, or part of one huge slab), so memory stays
    bounded whatever the ROI size.
    """
    u, v = [a for a in range(3) if a != axis]
    us = np.arange(lo[u], hi[u] + 1, dtype=float)
    vs = np.arange(lo[v], hi[v] + 1, dtype=float)
    linear = ijk_to_object[:3, :3]
    row_u = linear[:, u] * us[:, None] + ijk_to_object[:3, 3]  # (len(us), 3)
    rows_per_chunk = min(len(vs), max(1, _CHUNK_VOXELS // len(us)))
    slabs_per_chunk = max(1, _CHUNK_VOXELS // (rows_per_chunk * len(us)))
    positions = np.arange(lo[axis], hi[axis] + 1)
    if reverse:
        positions = positions[::-1]
    for start in range(0, len(positions), slabs_per_chunk):
        chunk = positions[start : start + slabs_per_chunk]
        offsets = linear[:, axis] * chunk[:, None]  # (n, 3)
        hit = np.zeros(len(chunk), dtype=bool)
        for row in range(0, len(vs), rows_per_chunk):
            plane = row_u[None, :, :] + (linear[:, v] * vs[row : row + rows_per_chunk, None])[:, None, :]
            points = plane[None] + offsets[:, None, None, :]  # (n, rows, len(us), 3)
            hit |= _inside(points, half_size).reshape(len(chunk), -1).any(axis=1)
        found = np.flatnonzero(hit)
        if found.size:
            return int(chunk[found[0]])
    return None


def roi_index_box(roi_object_to_ras, roi_size_mm, ras_to_ijk, volume_shape_kji):
    """Tightest inclusive index box (i0, j0, k0, i1, j1, k1) holding every voxel centre inside
    an ROI box, clipped to the volume.

    roi_object_to_ras: 4x4 ROI object (centre, axes) -> RAS; roi_size_mm: full edge lengths
    along the ROI's own x, y, z; ras_to_ijk: 4x4 RAS -> volume IJK (any orientation,
    transforms included by the caller); volume_shape_kji: the array shape (K, J, I).
    Works for rotated ROIs and oblique volumes: the 8 corners give a candidate range, then
    voxel centres are tested exactly, slab by slab from each end, so the box is tight.
    """
    object_to_ras = np.asarray(roi_object_to_ras, dtype=float).reshape(4, 4)
    ras_to_ijk = np.asarray(ras_to_ijk, dtype=float).reshape(4, 4)
    size = np.asarray(roi_size_mm, dtype=float).reshape(3)
    dims = np.array(volume_shape_kji[::-1], dtype=int)  # (I, J, K)
    if not (np.all(np.isfinite(object_to_ras)) and np.all(np.isfinite(ras_to_ijk)) and np.all(np.isfinite(size))):
        raise InputError("ROI or volume geometry contains NaN or infinite values")
    if np.any(size <= 0):
        raise InputError(f"ROI has zero size along an axis (size {tuple(float(s) for s in size)} mm)")
    if np.any(dims <= 0):
        raise InputError(f"Volume is empty (shape {tuple(volume_shape_kji)})")
    object_to_ijk = ras_to_ijk @ object_to_ras
    try:
        ijk_to_object = np.linalg.inv(object_to_ijk)
    except np.linalg.LinAlgError:
        raise InputError("ROI or volume geometry is singular (zero spacing or axis)") from None
    half = np.minimum(size / 2.0, _volume_reach(ijk_to_object, dims) + 1.0)

    signs = np.array([[sx, sy, sz, 1.0] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    with np.errstate(over="ignore", invalid="ignore"):
        corners_ijk = (object_to_ijk @ (signs * np.r_[half, 1.0]).T).T[:, :3]
    if np.all(np.isfinite(corners_ijk)):
        # One voxel of slack each side: the exact test below decides, this only bounds it.
        lo_f = np.maximum(np.floor(corners_ijk.min(axis=0)) - 1, 0)
        hi_f = np.minimum(np.ceil(corners_ijk.max(axis=0)) + 1, dims - 1)
        if np.any(lo_f > hi_f):
            raise InputError("ROI does not overlap the volume")
        lo, hi = lo_f.astype(int), hi_f.astype(int)
    else:  # an ROI far beyond float range in index units: bound it by the volume itself
        lo, hi = np.zeros(3, int), dims - 1

    # Narrow k first, then j inside the new k range, then i: each pass tests a smaller range.
    for axis in (2, 1, 0):
        first = _first_slab_with_voxel(ijk_to_object, half, lo, hi, axis, reverse=False)
        if first is None:
            raise InputError(
                "ROI contains no voxel centre of the volume (it is thinner than the voxel "
                "spacing, lies between voxel centres, or does not overlap the volume)"
            )
        last = _first_slab_with_voxel(ijk_to_object, half, lo, hi, axis, reverse=True)
        lo[axis], hi[axis] = first, last
    return (int(lo[0]), int(lo[1]), int(lo[2]), int(hi[0]), int(hi[1]), int(hi[2]))


def _volume_reach(ijk_to_object, dims):
    """Per ROI axis, the largest |coordinate| of the volume's corners in ROI object coordinates.

    A half size beyond it cannot add a voxel centre, so huge ROIs (1e300 mm) are clipped to it
    before any arithmetic that could overflow."""
    corners = np.array([[i, j, k, 1.0] for i in (0, dims[0] - 1) for j in (0, dims[1] - 1) for k in (0, dims[2] - 1)])
    with np.errstate(over="ignore", invalid="ignore"):
        reach = np.abs(ijk_to_object @ corners.T)[:3].max(axis=1)
    return np.where(np.isfinite(reach), reach, np.inf)


def validate_index_box(box, shape_kji, axis="k"):
    """Check an inclusive index box against a (K, J, I) volume; return it clipped.

    InputError for a box that is not 6 numbers, inverted, wholly outside, or less than 2
    voxels across in the slice plane of `axis` (a box prompt needs a width and a height).
    The engine applies the same rule (slicing.validate_box), so a box accepted here runs.
    """
    return validate_box(box, shape_kji, axis)


def in_plane(box, axis):
    """2D box (x0, y0, x1, y1) of an index box in the slices of `axis`."""
    return tuple(int(v) for v in split_box(box, axis)[0])


def slice_range(box, axis):
    """Inclusive (first, last) slice index of an index box along `axis`."""
    return tuple(int(v) for v in split_box(box, axis)[1])
