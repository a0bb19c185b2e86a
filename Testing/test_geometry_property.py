"""Property test of roi_index_box against a brute-force check of every voxel centre."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from MedSAMSegmentLib.engine import geometry
from MedSAMSegmentLib.errors import InputError

finite = dict(allow_nan=False, allow_infinity=False)


def rotation_from(angles):
    """Rotation matrix from three Euler angles (radians, z-y-x)."""
    a, b, c = angles
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


angles = st.tuples(*[st.floats(-np.pi, np.pi, **finite)] * 3)


@st.composite
def volumes(draw):
    """(shape_kji, ijk_to_ras): random direction, optional axis flips, spacing and origin."""
    shape = tuple(draw(st.integers(1, 16)) for _ in range(3))
    direction = rotation_from(draw(angles)) @ np.diag([draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)])
    spacing = [draw(st.floats(0.3, 3.0, **finite)) for _ in range(3)]
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = direction @ np.diag(spacing)
    ijk_to_ras[:3, 3] = [draw(st.floats(-100, 100, **finite)) for _ in range(3)]
    return shape, ijk_to_ras


def voxel_centres_inside(object_to_ras, size, ijk_to_ras, shape_kji):
    """(K, J, I) bool, by mapping every voxel centre to RAS and then into the ROI frame."""
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    ras = ijk_to_ras @ np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
    local = np.linalg.solve(object_to_ras, ras)[:3]
    limit = np.asarray(size)[:, None] / 2 + geometry.INSIDE_TOLERANCE_MM
    # A centre within rounding error of a face is inside by one matrix chain and outside by the other:
    # such examples test floating point, not the box (e.g. a corner generated at exactly 1e-6).
    assume(np.all(np.abs(np.abs(local) - limit) > 1e-9))
    return np.all(np.abs(local) <= limit, axis=0).reshape(shape_kji)


def expected_box(inside):
    k, j, i = np.nonzero(inside)
    return (i.min(), j.min(), k.min(), i.max(), j.max(), k.max())


common = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@common
@given(
    volume=volumes(),
    roi_angles=angles,
    centre_fraction=st.tuples(*[st.floats(-0.4, 1.4, **finite)] * 3),
    size_fraction=st.tuples(*[st.floats(0.02, 1.5, **finite)] * 3),
)
def test_box_is_the_tightest_box_of_voxel_centres_inside(volume, roi_angles, centre_fraction, size_fraction):
    shape, ijk_to_ras = volume
    extent = ijk_to_ras[:3, :3] @ (np.array(shape[::-1]) - 1)  # diagonal of the volume in RAS
    diagonal = np.linalg.norm(extent) + 1.0
    roi = np.eye(4)
    roi[:3, :3] = rotation_from(roi_angles)
    roi[:3, 3] = ijk_to_ras[:3, 3] + np.array(centre_fraction) * extent
    size = np.array(size_fraction) * diagonal
    inside = voxel_centres_inside(roi, size, ijk_to_ras, shape)
    if not inside.any():
        with pytest.raises(InputError):
            geometry.roi_index_box(roi, size, np.linalg.inv(ijk_to_ras), shape)
        return
    box = geometry.roi_index_box(roi, size, np.linalg.inv(ijk_to_ras), shape)
    assert box == expected_box(inside)


@common
@given(
    volume=volumes(),
    corner=st.tuples(*[st.floats(-3, 18, **finite)] * 3),
    extent=st.tuples(*[st.floats(0.05, 12, **finite)] * 3),
)
def test_aligned_roi_box_holds_only_voxels_inside(volume, corner, extent):
    """An ROI along the volume axes: its box holds exactly the voxel centres inside it."""
    shape, ijk_to_ras = volume
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    axes = ijk_to_ras[:3, :3] / spacing
    if np.linalg.det(axes) < 0:  # an ROI frame is a rotation; a flipped axis bounds the same box
        axes[:, 2] *= -1
    low, high = np.array(corner), np.array(corner) + np.array(extent)  # in voxel index units
    centre_ijk = (low + high) / 2
    roi = np.eye(4)
    roi[:3, :3] = axes
    roi[:3, 3] = (ijk_to_ras @ np.r_[centre_ijk, 1.0])[:3]
    size = (high - low) * spacing
    inside = voxel_centres_inside(roi, size, ijk_to_ras, shape)
    if not inside.any():
        with pytest.raises(InputError):
            geometry.roi_index_box(roi, size, np.linalg.inv(ijk_to_ras), shape)
        return
    i0, j0, k0, i1, j1, k1 = geometry.roi_index_box(roi, size, np.linalg.inv(ijk_to_ras), shape)
    assert (i0, j0, k0, i1, j1, k1) == expected_box(inside)
    assert inside[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1].all()
    assert inside.sum() == (i1 - i0 + 1) * (j1 - j0 + 1) * (k1 - k0 + 1)
