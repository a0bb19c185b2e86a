"""Shared, process-wide helpers for engine tests: one real LiteMedSAM predictor, case loading."""

import functools
import json

import numpy as np

from conftest import SHARED_DIR

REFERENCE_DIR = SHARED_DIR / "reference"


@functools.lru_cache(maxsize=None)
def shared_predictor():
    """The embedded LiteMedSAM on the CPU in float32; its cache is shared by all tests."""
    import torch

    from MedSAMSegmentLib.predictor import Predictor

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return Predictor(model="litemedsam", device="cpu", precision="float32", cache_mb=3072)


@functools.lru_cache(maxsize=None)
def reference_summary():
    return json.loads((REFERENCE_DIR / "summary.json").read_text())


@functools.lru_cache(maxsize=8)
def load_case(case):
    """(image (K,J,I), label (K,J,I)) of a case in ../shared/data/cases, read-only arrays."""
    import SimpleITK as sitk

    folder = SHARED_DIR / "data" / "cases" / case
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "image.nii.gz")))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "label.nii.gz")))
    image.flags.writeable = False
    label.flags.writeable = False
    return image, label


def dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
