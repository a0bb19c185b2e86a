"""Intensity windows: raw voxels -> uint8, exactly as the official MedSAM pre-processing.

The official `pre_CT_MR.py` windows the whole volume in float64. Large volumes (1024x1024x1000
int16 is 2 GB raw, 8 GB as float64) must not be copied that way, so the statistics are
computed on the native array (min/max, percentiles from a histogram for integer types) and the
mapping is applied slice by slice; the result is bit-identical to the official one.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

CT_LEVEL, CT_WIDTH = 40.0, 400.0
MR_PERCENTILES = (0.5, 99.5)
_SLAB_VOXELS = 1 << 24  # statistics are accumulated over slabs of about 16 M voxels


@dataclass(frozen=True)
class IntensityWindow:
    """Clip to [lo, hi], map [vmin, vmax] (the clipped volume's range) to 0..255, truncate."""

    lo: float
    hi: float
    vmin: float
    vmax: float
    zero_stays_zero: bool  # MR rule: voxels that were exactly 0 stay 0
    description: str

    @property
    def key(self):
        return (self.lo, self.hi, self.vmin, self.vmax, self.zero_stays_zero)

    def apply(self, raw):
        """uint8 array of raw's shape; call it on slices, it allocates float64 of raw's size."""
        raw = np.asarray(raw)
        x = np.clip(raw, self.lo, self.hi).astype(np.float64, copy=False)
        x = (x - self.vmin) / (self.vmax - self.vmin) * 255.0
        if raw.dtype.kind == "f":
            x[~np.isfinite(raw)] = 0.0
        out = x.astype(np.uint8)  # truncation, as np.uint8(...) in the official code
        if self.zero_stays_zero:
            out[raw == 0] = 0
        return out

    def apply_volume(self, volume):
        out = np.empty(volume.shape, np.uint8)
        for k in range(volume.shape[0]):
            out[k] = self.apply(volume[k])
        return out


def _slabs(volume):
    step = max(1, _SLAB_VOXELS // max(1, int(np.prod(volume.shape[1:]))))
    for k in range(0, volume.shape[0], step):
        yield volume[k : k + step]


def _finite_min_max(volume):
    if volume.dtype.kind != "f":
        return float(volume.min()), float(volume.max())
    lo, hi = np.inf, -np.inf
    for slab in _slabs(volume):
        finite = slab[np.isfinite(slab)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if lo > hi:
        raise InputError("the image has no finite voxel values (all NaN or Inf): nothing to segment")
    return lo, hi


def _check_volume(volume):
    if volume.size == 0:
        raise InputError("the image is empty")
    if volume.dtype.kind not in "iufb":
        raise InputError(f"unsupported voxel type {volume.dtype}: expected integer or float scalars")


# Appended to every "no contrast" refusal: the two ways out.
NO_CONTRAST_HINT = "give an explicit window that overlaps the image's range, or the CT or MR rule"


def _window(volume, lo, hi, zero_stays_zero, description, clipped_range=True):
    vol_min, vol_max = _finite_min_max(volume)
    if vol_min == vol_max:
        raise InputError(f"the image is constant ({vol_min:g}): nothing to segment")
    _check_contrast(lo, hi, vol_min, vol_max, description)
    if clipped_range:  # min-max of the clipped volume, as the official code
        vmin, vmax = float(np.clip(vol_min, lo, hi)), float(np.clip(vol_max, lo, hi))
    else:
        vmin, vmax = lo, hi
    return IntensityWindow(float(lo), float(hi), vmin, vmax, zero_stays_zero, description)


def _check_contrast(lo, hi, vol_min, vol_max, description):
    """InputError, saying which of the three it is, when the window would make every voxel one grey:
    a window of no width, a window wholly outside the image's range, or endpoints beyond float range."""
    where = f"the image's range [{vol_min:g}, {vol_max:g}]"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"{description} reaches beyond the largest float ([{lo:g}, {hi:g}]); {NO_CONTRAST_HINT}")
    if not hi > lo:
        raise InputError(
            f"{description} has no width on this image (it spans [{lo:g}, {hi:g}], the image [{vol_min:g}, {vol_max:g}]): the image "
            f"is binary, a label map or nearly constant, so there is no contrast to segment; {NO_CONTRAST_HINT}"
        )
    if hi <= vol_min or lo >= vol_max:
        side = "below" if hi <= vol_min else "above"
        raise InputError(
            f"{description} ([{lo:g}, {hi:g}]) lies wholly {side} {where}: every voxel would be "
            f"the same grey; {NO_CONTRAST_HINT}"
        )


def ct_window(volume, level=CT_LEVEL, width=CT_WIDTH):
    """Official CT rule: clip to level -/+ width/2, then min-max of the clipped volume."""
    _check_volume(volume)
    return _window(volume, level - width / 2, level + width / 2, False, f"CT window {level:g}/{width:g}")


def explicit_window(volume, level, width):
    """A window the caller gives (e.g. Slicer's display window): [level -/+ width/2] -> 0..255."""
    _check_volume(volume)
    if not (np.isfinite(level) and np.isfinite(width)):
        raise InputError(f"window level and width must be finite numbers, got {level:g}/{width:g}")
    if not width > 0:
        raise InputError(f"window width must be positive, got {width:g}")
    if not level + width / 2 > level - width / 2:
        raise InputError(
            f"window width {width:g} is too small for level {level:g}: the window collapses to one value; "
            f"{NO_CONTRAST_HINT}"
        )
    return _window(
        volume, level - width / 2, level + width / 2, False, f"window {level:g}/{width:g}", clipped_range=False
    )


def _lerp_like_numpy(a, b, t):
    # numpy's 'linear' percentile interpolation, including its symmetric form for t >= 0.5,
    # so histogram percentiles are bit-identical to np.percentile.
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def _positive_percentiles_int(volume, qs):
    """Exact np.percentile of the voxels > 0 of an integer volume, from a histogram."""
    vmax = int(volume.max())
    if vmax <= 0:
        return None
    counts = np.zeros(vmax + 1, np.int64)
    for slab in _slabs(volume):
        pos = slab[slab > 0]
        if pos.size:
            counts += np.bincount(pos.astype(np.int64, copy=False), minlength=vmax + 1)
    cum = np.cumsum(counts)
    n = int(cum[-1])
    values = []
    for q in qs:
        virtual = np.true_divide(q, 100) * (n - 1)
        prev = int(np.floor(virtual))
        nxt = min(prev + 1, n - 1)
        a = float(np.searchsorted(cum, prev, side="right"))
        b = float(np.searchsorted(cum, nxt, side="right"))
        values.append(_lerp_like_numpy(a, b, virtual - prev))
    return values


def _positive_percentiles(volume, qs):
    if volume.dtype.kind in "iub" and int(volume.max()) < (1 << 24):
        return _positive_percentiles_int(volume, qs)
    pos = volume[(volume > 0) & np.isfinite(volume)] if volume.dtype.kind == "f" else volume[volume > 0]
    if pos.size == 0:
        return None
    return [float(np.percentile(pos, q)) for q in qs]


def mr_percentile_window(volume):
    """Official MR rule: 0.5th-99.5th percentile of the voxels > 0; zeros stay zero."""
    _check_volume(volume)
    pct = _positive_percentiles(volume, MR_PERCENTILES)
    if pct is None:
        raise InputError("the image has no voxel above 0, so the MR percentile rule cannot be used; give a window")
    return _window(volume, pct[0], pct[1], True, "MR percentiles 0.5-99.5 of voxels > 0")


def guess_modality(volume):
    """CT if the volume holds air in Hounsfield units (about -1000), else MR.

    A plain rule: CT volumes contain air (-1000 HU, padding down to -3024); MR volumes are non-negative or
    have arbitrary scanner units that rarely reach far below zero.
    """
    _check_volume(volume)
    lo, hi = _finite_min_max(volume)
    return "CT" if -3100.0 <= lo <= -500.0 and hi >= 0.0 else "MR"


def auto_window(volume, modality=None, window=None):
    """Pick the window: an explicit (level, width), the rule of a modality, or a guess."""
    if window is not None:
        level, width = window
        return explicit_window(volume, float(level), float(width))
    modality = (modality or guess_modality(volume)).upper()
    if modality == "CT":
        return ct_window(volume)
    if modality in ("MR", "MRI", "OTHER"):
        return mr_percentile_window(volume)
    raise InputError(f"unknown modality {modality!r}: expected CT or MR")
