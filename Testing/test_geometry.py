"""geometry.py: axes, axis choice, ROI -> index box, index-box checks and slice convention."""

import math
import time
import tracemalloc

import numpy as np
import pytest

from MedSAMSegmentLib.engine import geometry
from MedSAMSegmentLib.errors import InputError


def rotation(axis, degrees):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def affine(linear=np.eye(3), translation=(0, 0, 0)):
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = translation
    return matrix


def brute_force_inside(object_to_ras, size, ijk_to_ras, shape_kji):
    """(K, J, I) bool: voxel centres inside the ROI, one RAS point at a time through RAS."""
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
    ras = ijk_to_ras @ ijk
    local = np.linalg.solve(object_to_ras, ras)[:3]
    half = np.asarray(size, dtype=float)[:, None] / 2
    return np.all(np.abs(local) <= half + geometry.INSIDE_TOLERANCE_MM, axis=0).reshape(shape_kji)


def bbox_of(inside):
    k, j, i = np.nonzero(inside)
    return (i.min(), j.min(), k.min(), i.max(), j.max(), k.max())


def test_numpy_axis_and_unknown_axis():
    assert [geometry.numpy_axis(a) for a in geometry.AXES] == [2, 1, 0]
    with pytest.raises(InputError, match="axis"):
        geometry.numpy_axis("z")


@pytest.mark.parametrize(
    "linear, direction, expected",
    [
        (np.eye(3), (0, 0, 1), "k"),
        (np.diag([-0.7, -0.7, 3.0]), (0, 0, -1), "k"),  # LPS volume, direction inferior
        (np.diag([-0.7, -0.7, 3.0]), (1, 0, 0), "i"),
        (np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0.0]]), (0, 0, 1), "j"),  # sagittal acquisition
        (rotation("x", 30) @ np.diag([1, 1, 5]), (0, 0, 1), "k"),  # scaling must not matter
        (rotation("x", 60) @ np.diag([1, 1, 5]), (0, 0, 1), "j"),
    ],
)
def test_closest_index_axis(linear, direction, expected):
    assert geometry.closest_index_axis(affine(linear, (10, -4, 7)), direction) == expected


def test_closest_index_axis_tie_prefers_k_and_rejects_degenerate_input():
    assert geometry.closest_index_axis(np.eye(4), (0, 1, 1)) == "k"
    assert geometry.closest_index_axis(np.eye(4), (1, 1, 0)) == "j"
    with pytest.raises(InputError):
        geometry.closest_index_axis(np.eye(4), (0, 0, 0))
    with pytest.raises(InputError):
        geometry.closest_index_axis(np.diag([1, 0, 1, 1.0]), (0, 0, 1))


def test_aligned_roi_with_faces_on_voxel_centres_keeps_them():
    # Unit voxels at the origin: faces at i = 3 and 7, j = 5 and 7, k = 4 and 10 exactly.
    box = geometry.roi_index_box(affine(translation=(5, 6, 7)), (4, 2, 6), np.eye(4), (20, 20, 20))
    assert box == (3, 5, 4, 7, 7, 10)


def test_roi_on_lps_oblique_volume_matches_brute_force():
    shape = (12, 15, 14)
    ijk_to_ras = affine(rotation("z", 10) @ rotation("x", 5) @ np.diag([-1, -1, 1.0]) @ np.diag([0.8, 0.9, 2.5]), (30, 20, -10))
    roi = affine(rotation("y", 25) @ rotation("z", -40), ijk_to_ras[:3, :3] @ np.array([7, 6, 5]) + ijk_to_ras[:3, 3])
    size = (6.0, 4.0, 9.0)
    box = geometry.roi_index_box(roi, size, np.linalg.inv(ijk_to_ras), shape)
    assert box == bbox_of(brute_force_inside(roi, size, ijk_to_ras, shape))


def test_tilted_thin_roi_box_is_tighter_than_its_corners():
    # A 0.2 mm slab tilted by atan(0.05) across slice k = 5 holds voxel centres only where it
    # crosses that slice (i = 18..22), while its corners span i = 5..35.
    shape = (10, 20, 40)
    roi = affine(rotation("y", math.degrees(math.atan(0.05))), (20, 10, 5))
    size = (30.0, 6.0, 0.2)
    box = geometry.roi_index_box(roi, size, np.eye(4), shape)
    assert box == bbox_of(brute_force_inside(roi, size, np.eye(4), shape))
    assert box == (18, 7, 5, 22, 13, 5)


def test_roi_partly_outside_is_clipped():
    box = geometry.roi_index_box(affine(translation=(-3, 5, 28)), (10, 4, 10), np.eye(4), (30, 20, 20))
    assert box == (0, 3, 23, 2, 7, 29)


def test_roi_wholly_outside_raises():
    with pytest.raises(InputError, match="does not overlap the volume"):
        geometry.roi_index_box(affine(translation=(100, 5, 5)), (10, 10, 10), np.eye(4), (20, 20, 20))


@pytest.mark.parametrize(
    "size, centre",
    [
        ((0, 0, 0), (5, 5, 5)),  # zero size, even on a voxel centre
        ((4, 0, 4), (5, 5, 5)),
        ((4, 0.5, 4), (5, 5.5, 5)),  # thinner than a voxel, between two rows of centres
    ],
)
def test_empty_roi_raises(size, centre):
    with pytest.raises(InputError):
        geometry.roi_index_box(affine(translation=centre), size, np.eye(4), (20, 20, 20))


def test_rotated_roi_in_volume_corner_without_voxel_raises():
    # The corner bound reaches voxel (0, 0, 0) but the rotated box holds no voxel centre.
    roi = affine(rotation("z", 45), (-1.2, -1.2, 0))
    with pytest.raises(InputError, match="no voxel centre"):
        geometry.roi_index_box(roi, (2.0, 2.0, 2.0), np.eye(4), (5, 5, 5))


def test_huge_rotated_roi_is_fast_and_bounded_in_memory():
    shape = (2000, 2000, 2000)  # 8e9 voxels: only the shape is used
    roi = affine(rotation("z", 30) @ rotation("x", 20), (1000, 1000, 1000))
    tracemalloc.start()
    start = time.perf_counter()
    box = geometry.roi_index_box(roi, (1500.0, 1200.0, 900.0), np.eye(4), shape)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200e6 and elapsed < 20
    # Faces of a 1500 x 1200 x 900 box around the centre, within a voxel of the corner bound.
    half = np.array([750, 600, 450.0])
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    corners = corners @ (rotation("z", 30) @ rotation("x", 20)).T + 1000
    expected_lo = np.maximum(np.ceil(corners.min(axis=0)), 0)
    expected_hi = np.minimum(np.floor(corners.max(axis=0)), 1999)
    assert np.all(np.abs(np.array(box[:3]) - expected_lo) <= 2)
    assert np.all(np.abs(np.array(box[3:]) - expected_hi) <= 2)


def test_validate_index_box():
    shape = (10, 20, 30)  # K, J, I
    assert geometry.validate_index_box((-5, 2, 3, 40, 8, 12), shape) == (0, 2, 3, 29, 8, 9)
    assert geometry.validate_index_box(np.array([1, 2, 3, 4, 5, 6]), shape) == (1, 2, 3, 4, 5, 6)
    # one voxel thick along the slice axis is fine; one voxel across in-plane is not
    assert geometry.validate_index_box((1, 2, 3, 1, 5, 6), shape, axis="i") == (1, 2, 3, 1, 5, 6)
    with pytest.raises(InputError, match="too small"):
        geometry.validate_index_box((1, 2, 3, 1, 5, 6), shape, axis="k")
    with pytest.raises(InputError, match="too small"):
        geometry.validate_index_box((0, 2, 3, 20, 8, 3), shape, axis="j")
    with pytest.raises(InputError, match="too small"):
        geometry.validate_index_box((29, 2, 3, 35, 8, 5), shape)  # clipped to one column
    with pytest.raises(InputError, match="inverted"):
        geometry.validate_index_box((5, 2, 3, 4, 8, 5), shape)
    with pytest.raises(InputError, match="outside"):
        geometry.validate_index_box((30, 2, 3, 35, 8, 5), shape)
    for bad in [(1, 2, 3), "abcdef", None]:
        with pytest.raises(InputError):
            geometry.validate_index_box(bad, shape)


@pytest.mark.parametrize("axis", geometry.AXES)
def test_slice_convention(axis):
    """in_plane / slice_range follow ARCHITECTURE.md: slice columns are x, rows are y."""
    shape = (5, 6, 7)
    volume = np.arange(np.prod(shape)).reshape(shape)
    box = (1, 2, 3, 5, 4, 4)
    x0, y0, x1, y1 = geometry.in_plane(box, axis)
    first, last = geometry.slice_range(box, axis)
    for index in (first, last):
        plane = np.take(volume, index, axis=geometry.numpy_axis(axis))
        for x, y in [(x0, y0), (x1, y1), (x0, y1)]:
            ijk = {"k": (x, y, index), "j": (x, index, y), "i": (index, x, y)}[axis]
            assert plane[y, x] == volume[ijk[2], ijk[1], ijk[0]]
    expected = {"k": ((1, 2, 5, 4), (3, 4)), "j": ((1, 3, 5, 4), (2, 4)), "i": ((2, 3, 4, 4), (1, 5))}[axis]
    assert ((x0, y0, x1, y1), (first, last)) == expected
