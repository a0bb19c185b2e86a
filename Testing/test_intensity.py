"""Intensity windows: official rules, histogram percentiles, slice-by-slice application, bad input."""

import numpy as np
import pytest

from MedSAMSegmentLib.errors import InputError
from MedSAMSegmentLib.engine.intensity import (
    auto_window,
    ct_window,
    explicit_window,
    guess_modality,
    mr_percentile_window,
)

RNG = np.random.default_rng(3)


def _official_mr(volume):
    # pre_CT_MR.py, written out in whole-volume float64 as the official script does
    lo, hi = np.percentile(volume[volume > 0], 0.5), np.percentile(volume[volume > 0], 99.5)
    x = np.clip(volume, lo, hi)
    x = (x - x.min()) / (x.max() - x.min()) * 255.0
    x[volume == 0] = 0
    return np.uint8(x)


def _official_ct(volume, level=40, width=400):
    x = np.clip(volume, level - width / 2, level + width / 2)
    return np.uint8((x - x.min()) / (x.max() - x.min()) * 255.0)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.uint8])
def test_histogram_percentiles_equal_numpy_for_integer_volumes(dtype):
    hi = 250 if dtype == np.uint8 else 3000
    vol = RNG.integers(0, hi, (7, 33, 29)).astype(dtype)
    vol[:, :3] = 0
    assert np.array_equal(mr_percentile_window(vol).apply_volume(vol), _official_mr(vol))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_volumes_follow_the_official_rules(dtype):
    vol = (RNG.normal(300, 200, (5, 20, 21))).astype(dtype)
    assert np.array_equal(mr_percentile_window(vol).apply_volume(vol), _official_mr(vol))
    assert np.array_equal(ct_window(vol).apply_volume(vol), _official_ct(vol))


def test_ct_window_uses_the_clipped_volume_range_like_the_official_code():
    vol = RNG.integers(-100, 200, (4, 16, 16)).astype(np.int16)  # never reaches -160 or 240
    win = ct_window(vol)
    assert (win.vmin, win.vmax) == (float(vol.min()), float(vol.max()))
    assert np.array_equal(win.apply_volume(vol), _official_ct(vol))


def test_explicit_window_maps_the_window_itself_to_0_255():
    vol = np.arange(-500, 500, dtype=np.int16).reshape(1, 10, 100)
    out = explicit_window(vol, level=0, width=200).apply(vol)
    assert out[vol <= -100].max() == 0 and out[vol >= 100].min() == 255
    assert out[vol == 0][0] == 127


def test_non_finite_voxels_are_ignored_for_statistics_and_become_zero():
    vol = RNG.normal(500, 100, (3, 12, 12)).astype(np.float32)
    clean = vol.copy()
    vol[0, 0, :4] = [np.nan, np.inf, -np.inf, np.nan]
    win = mr_percentile_window(np.where(np.isfinite(vol), vol, 0))
    out = auto_window(vol, modality="MR").apply_volume(vol)
    assert out[0, 0, :4].tolist() == [0, 0, 0, 0]
    assert ct_window(vol).vmax == ct_window(clean).vmax
    assert win.lo == auto_window(vol, modality="MR").lo


@pytest.mark.parametrize(
    "volume, message",
    [
        (np.full((3, 8, 8), 7, np.int16), "constant"),
        (np.full((3, 8, 8), np.nan, np.float32), "no finite"),
        (np.zeros((0, 8, 8), np.int16), "empty"),
    ],
)
def test_images_with_nothing_to_segment_are_refused(volume, message):
    with pytest.raises(InputError, match=message):
        auto_window(volume)


def test_mr_rule_needs_positive_voxels_and_explicit_window_needs_positive_width():
    with pytest.raises(InputError, match="no voxel above 0"):
        mr_percentile_window(-RNG.integers(1, 100, (2, 8, 8)).astype(np.int16))
    with pytest.raises(InputError, match="width must be positive"):
        explicit_window(np.arange(64, dtype=np.int16).reshape(1, 8, 8), 10, 0)
    with pytest.raises(InputError, match=r"CT window 40/400 \(\[-160, 240\]\) lies wholly below the image.s range"):
        ct_window(RNG.integers(1000, 2000, (2, 8, 8)).astype(np.int16))


def test_modality_guess_and_auto_choice():
    ct = RNG.integers(-1024, 1500, (2, 16, 16)).astype(np.int16)
    mr = RNG.integers(0, 900, (2, 16, 16)).astype(np.int16)
    assert guess_modality(ct) == "CT" and guess_modality(mr) == "MR"
    assert auto_window(ct).description.startswith("CT")
    assert auto_window(mr).description.startswith("MR")
    assert auto_window(mr, window=(100, 50)).description == "window 100/50"
    with pytest.raises(InputError, match="unknown modality"):
        auto_window(mr, modality="PET-CT")


def test_extreme_values_do_not_overflow():
    vol = np.array([[[np.iinfo(np.int32).min, 0, 1, np.iinfo(np.int32).max]]], np.int32)
    out = explicit_window(vol, level=0, width=2.0**32).apply(vol)
    assert out.tolist() == [[[0, 127, 127, 254]]]  # (2**31 - 1 + 2**31) / 2**32 * 255 truncates to 254
