"""Slices of a (K, J, I) volume along an index axis, and boxes in slice coordinates.

A slice along axis k is vol[k] (x = i, y = j); along j it is vol[:, j] (x = i, y = k); along i
it is vol[:, :, i] (x = j, y = k). Index boxes are (i0, j0, k0, i1, j1, k1), inclusive.
"""

from ..errors import InputError

AXES = ("i", "j", "k")
_NUMPY_AXIS = {"k": 0, "j": 1, "i": 2}
_BOX_AXIS = {"i": 0, "j": 1, "k": 2}


def numpy_axis(axis):
    try:
        return _NUMPY_AXIS[str(axis).lower()]
    except KeyError:
        raise InputError(f"unknown slice axis {axis!r}: expected i, j or k") from None


def num_slices(shape_kji, axis):
    return shape_kji[numpy_axis(axis)]


def get_slice(volume, axis, index):
    """2D view (rows = y, columns = x) of slice `index` along `axis`."""
    return volume.take(index, axis=numpy_axis(axis)) if volume.ndim == 3 else volume


def slice_index(axis, index):
    """numpy index expression selecting the slice, for writing into a volume."""
    sel = [slice(None)] * 3
    sel[numpy_axis(axis)] = index
    return tuple(sel)


def split_box(box_ijk, axis):
    """(x0, y0, x1, y1) in slice pixels and (first, last) slice of an index box."""
    lo, hi = list(box_ijk[:3]), list(box_ijk[3:])
    a = _BOX_AXIS[str(axis).lower()]
    plane = [n for n in range(3) if n != a]  # ascending: x is the lower index axis
    return (lo[plane[0]], lo[plane[1]], hi[plane[0]], hi[plane[1]]), (lo[a], hi[a])


def validate_box(box_ijk, shape_kji, axis):
    """Integer index box inside the volume, at least 2 voxels across in-plane; else InputError."""
    try:
        box = [int(round(float(v))) for v in box_ijk]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite coordinate
        raise InputError(f"the box must be 6 finite numbers (i0 j0 k0 i1 j1 k1), got {box_ijk!r}") from None
    if len(box) != 6:
        raise InputError(f"the box must be 6 numbers (i0 j0 k0 i1 j1 k1), got {len(box)}")
    size_ijk = shape_kji[::-1]
    for n, name in enumerate("ijk"):
        lo, hi = box[n], box[n + 3]
        if lo > hi:
            raise InputError(f"the box is inverted along {name}: {lo} > {hi}")
        if hi < 0 or lo >= size_ijk[n]:
            raise InputError(
                f"the box {name} range [{lo}, {hi}] is outside the volume (valid 0..{size_ijk[n] - 1})"
            )
    box = [max(0, box[n]) if n < 3 else min(size_ijk[n - 3] - 1, box[n]) for n in range(6)]
    (x0, y0, x1, y1), _ = split_box(box, axis)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise InputError(
            f"the box is too small to segment: {x1 - x0 + 1} x {y1 - y0 + 1} voxels in the slice "
            "(at least 2 x 2 needed)"
        )
    return tuple(box)


def key_slice_box(box_ijk, shape_kji, axis):
    """(slice index, (x0, y0, x1, y1)) of a one-slice-thick index box along `axis` (an added key-slice
    box); InputError when it is more than one slice thick or not inside the volume."""
    try:
        raw = [int(round(float(v))) for v in box_ijk]
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"an added box must be 6 finite numbers (i0 j0 k i1 j1 k), got {box_ijk!r}") from None
    if len(raw) != 6:
        raise InputError(f"an added box must be 6 numbers (i0 j0 k i1 j1 k), got {len(raw)}")
    a = _BOX_AXIS[str(axis).lower()]
    if raw[a] != raw[a + 3]:
        raise InputError(
            f"an added box must be one slice thick along {axis}: its {axis} range is {raw[a]}..{raw[a + 3]}"
        )
    size_ijk = shape_kji[::-1]
    for n, name in enumerate("ijk"):
        if not (0 <= raw[n] <= raw[n + 3] < size_ijk[n]):
            raise InputError(
                f"the added box {name} range [{raw[n]}, {raw[n + 3]}] is not inside the volume "
                f"(valid 0..{size_ijk[n] - 1})"
            )
    box2d, (index, _) = split_box(validate_box(raw, shape_kji, axis), axis)
    return index, box2d
