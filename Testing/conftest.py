"""Shared pytest fixtures: paths, and a real slicer-core MRML scene (see slicercore.py)."""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The data shared by every checkout lives next to the repository, never inside it.
SHARED_DIR = REPO_ROOT.parent / "shared"
CASES_DIR = SHARED_DIR / "data" / "cases"

# MedSAMSegmentLib is importable without installing the package.
_LIB_PARENT = str(REPO_ROOT / "MedSAMSegment")
if _LIB_PARENT not in sys.path:
    sys.path.insert(0, _LIB_PARENT)


@pytest.fixture(scope="session")
def cases_dir():
    if not CASES_DIR.is_dir():
        pytest.skip(f"shared test cases not found at {os.path.relpath(CASES_DIR, REPO_ROOT)}")
    return CASES_DIR


@pytest.fixture
def vtk_messages():
    """VTK errors and warnings logged during the test (`.errors`, `.warnings`)."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    import slicercore

    with slicercore.VtkMessages() as messages:
        yield messages


@pytest.fixture
def slicer_core(vtk_messages):
    """A fresh MRML scene with the Qt-free module logics; slicer.* globals are left alone."""
    import slicercore

    core = slicercore.SlicerCore()
    try:
        yield core
    finally:
        core.close()
