"""Slicer markups ROI files (.mrk.json) as a box prompt: ROI object-to-RAS matrix and size in mm.

File layout as Slicer's vtkMRMLMarkupsROIJsonStorageNode writes it: `center` (3), `size` (3, mm),
`orientation` (9, row-major 3x3 whose columns are the ROI axes), all in the file's
`coordinateSystem` ("LPS" when absent, as Slicer assumes). LPS files have x and y negated, which for
`orientation` means its first two rows. We write LPS: Slicer 5.13 reads the orientation of a rotated
ROI in an RAS file as if it were LPS (its own RAS files don't survive its round trip).
"""

import json
import os

import numpy as np

from ..engine.geometry import INSIDE_OUT_ROI
from ..errors import InputError
from .imageio import atomic_output, check_readable

SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def read_roi_json(path):
    """Return (roi_object_to_ras 4x4, size_mm (3,)) of the single ROI in a .mrk.json file."""
    path = check_readable(os.fspath(path), "ROI file")
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError:
        raise InputError(f"ROI file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path} as a markups JSON file: {exc}") from None
    except RecursionError:
        raise InputError(f"cannot read {path} as a markups JSON file: it is nested too deeply") from None
    roi = _single_roi(document, path)
    system = roi.get("coordinateSystem", "LPS")
    if system not in ("LPS", "RAS"):
        raise InputError(f"{path}: coordinateSystem {system!r} is neither 'LPS' nor 'RAS'")
    if roi.get("coordinateUnits", "mm") != "mm":
        raise InputError(f"{path}: coordinates in {roi['coordinateUnits']!r}; only mm is supported")
    if roi.get("insideOut", False):
        raise InputError(f"{path}: {INSIDE_OUT_ROI}")
    centre = _vector(roi, "center", 3, path) if "center" in roi else _first_point(roi, path)
    size = _vector(roi, "size", 3, path)
    if np.any(size < 0):
        raise InputError(f"{path}: ROI size {size.tolist()} has a negative side")
    axes = _vector(roi, "orientation", 9, path).reshape(3, 3) if "orientation" in roi else np.eye(3)
    if system == "LPS":
        centre, axes = LPS_TO_RAS @ centre, LPS_TO_RAS @ axes
    if abs(np.linalg.det(axes)) < 1e-6:
        raise InputError(f"{path}: ROI orientation is degenerate (its axes are not independent)")
    object_to_ras = np.eye(4)
    object_to_ras[:3, :3] = axes
    object_to_ras[:3, 3] = centre
    return object_to_ras, size


def _single_roi(document, path):
    markups = document.get("markups") if isinstance(document, dict) else None
    if not isinstance(markups, list) or not markups:
        raise InputError(f"{path} is not a Slicer markups file (no 'markups' list)")
    if len(markups) != 1:
        raise InputError(f"{path} holds {len(markups)} markups; it must hold exactly one ROI")
    roi = markups[0]
    kind = roi.get("type") if isinstance(roi, dict) else None
    if kind != "ROI":
        raise InputError(f"{path} holds a {kind!r} markup, not an ROI")
    return roi


def _vector(roi, key, length, path):
    try:
        values = np.array(roi[key], dtype=float)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: ROI has no numeric '{key}'") from None
    if values.shape != (length,) or not np.all(np.isfinite(values)):
        raise InputError(f"{path}: ROI '{key}' must be {length} finite numbers, got {roi[key]!r}")
    return values


def _first_point(roi, path):
    points = roi.get("controlPoints") or []
    if not points or not isinstance(points[0], dict):
        raise InputError(f"{path}: ROI has neither 'center' nor a control point")
    return _vector(points[0], "position", 3, path)


def write_roi_json(path, object_to_ras, size_mm, coordinate_system="LPS", overwrite=False):
    """Write a box ROI the way Slicer does (atomically); the inverse of read_roi_json."""
    if coordinate_system not in ("LPS", "RAS"):
        raise InputError(f"coordinate system {coordinate_system!r} is neither 'LPS' nor 'RAS'")
    matrix = np.asarray(object_to_ras, dtype=float)
    centre, axes = matrix[:3, 3], matrix[:3, :3]
    if coordinate_system == "LPS":
        centre, axes = LPS_TO_RAS @ centre, LPS_TO_RAS @ axes
    roi = {
        "type": "ROI",
        "coordinateSystem": coordinate_system,
        "coordinateUnits": "mm",
        "roiType": "Box",
        "center": centre.tolist(),
        "orientation": axes.ravel().tolist(),
        "size": [float(s) for s in size_mm],
        "insideOut": False,
        "controlPoints": [{"id": "1", "label": "R-1", "position": centre.tolist(), "positionStatus": "defined"}],
    }
    text = json.dumps({"@schema": SCHEMA, "markups": [roi]}, indent=4)
    with atomic_output(path, overwrite) as temp:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
