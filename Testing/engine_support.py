"""Shared, process-wide helpers for engine tests: one real LiteMedSAM predictor, case loading."""

import functools
import json

from conftest import SHARED_DIR
from MedSAMSegmentLib.engine.metrics import dice

__all__ = ["REFERENCE_DIR", "dice", "load_case", "reference_summary", "shared_predictor"]

REFERENCE_DIR = SHARED_DIR / "reference"


@functools.lru_cache(maxsize=None)
def shared_predictor():
    """The embedded LiteMedSAM on the CPU in float32; its cache is shared by all tests."""
    import torch

    from MedSAMSegmentLib.engine.predictor import Predictor

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
