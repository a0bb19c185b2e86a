"""MedSAMSegment.py's console API (MedSAMSegmentLogic) and settings storage, outside Slicer.

The module file imports qt, ctk and slicer.ScriptedLoadableModule at load time; these tests give it
small stand-ins (a dict-backed QSettings, empty base classes) so its logic runs under pytest with the
real MedSAMSegmentLib and, where MRML is needed, slicer-core.
"""

import importlib
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class FakeQSettings:
    store = {}

    def value(self, key, default=None):
        return self.store.get(key, default)

    def setValue(self, key, value):
        self.store[key] = str(value)  # QSettings on disk hands values back as strings


@pytest.fixture
def module(monkeypatch):
    """MedSAMSegment.py imported with Qt stand-ins; slicer is slicer-core when installed."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    FakeQSettings.store = {}
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QSettings=FakeQSettings))
    monkeypatch.setitem(sys.modules, "ctk", types.SimpleNamespace())
    base = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                 "ScriptedLoadableModuleTest"):
        setattr(base, name, type(name, (), {"__init__": lambda self, *args: None}))
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", base)
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", base, raising=False)
    monkeypatch.setattr(slicer, "i18n", i18n, raising=False)
    monkeypatch.syspath_prepend(str(ROOT / "MedSAMSegment"))
    sys.modules.pop("MedSAMSegment", None)
    imported = importlib.import_module("MedSAMSegment")
    yield imported
    sys.modules.pop("MedSAMSegment", None)


def test_settings_round_trip_through_qsettings(module):
    from MedSAMSegmentLib.settings import MedSAMSettings

    settings = MedSAMSettings(model="medsam-vit-b", device="cpu", cache_mb=256, cache_folder="/tmp/w")
    module.saveSettings(settings)
    assert FakeQSettings.store["MedSAMSegment/model"] == "medsam-vit-b"
    assert module.loadSettings() == settings  # strings converted back by from_dict


def test_invalid_stored_settings_fall_back_to_defaults(module):
    from MedSAMSegmentLib.settings import MedSAMSettings

    FakeQSettings.store = {"MedSAMSegment/device": "quantum", "MedSAMSegment/model": "litemedsam"}
    assert module.loadSettings() == MedSAMSettings()


def test_segment_rois_makes_one_segment_per_roi_with_progress_and_cancel(module, monkeypatch):
    from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic

    calls = []

    def segment(self, volumeNode, roiNode, segmentationNode, segmentName=None, progressCallback=None,
                cancelCallback=None, **options):
        calls.append((roiNode.GetName(), segmentName, cancelCallback))
        progressCallback(1, 3)
        return f"id-{segmentName}"

    monkeypatch.setattr(MedSAMLogic, "segment", segment)
    rois = [types.SimpleNamespace(GetName=lambda n=n: n) for n in ("liver", "kidney")]
    progress = []
    cancel = object()
    logic = module.MedSAMSegmentLogic()
    ids = logic.segmentROIs("volume", rois, "segmentation", lambda *a: progress.append(a), cancel)
    assert ids == ["id-liver", "id-kidney"]
    assert calls == [("liver", "liver", cancel), ("kidney", "kidney", cancel)]
    assert progress == [(0, 1, 3), (1, 1, 3)]


def test_weights_status_and_download_use_the_weights_folder(module, monkeypatch, tmp_path):
    from MedSAMSegmentLib.model import weights
    from MedSAMSegmentLib.settings import MedSAMSettings

    logic = module.MedSAMSegmentLogic(MedSAMSettings(cache_folder=str(tmp_path)))
    assert logic.modelNames()[0] == "litemedsam"
    assert "not downloaded" in logic.weightsStatus("medsam-vit-b")
    (tmp_path / "medsam_vit_b.pth").write_bytes(b"x")
    assert str(tmp_path / "medsam_vit_b.pth") in logic.weightsStatus("medsam-vit-b")
    monkeypatch.setattr(weights, "embedded_litemedsam_path", lambda: Path("/somewhere/lite_medsam.pth"))
    assert "bundled (/somewhere/lite_medsam.pth)" in logic.weightsStatus("litemedsam")

    asked = {}
    monkeypatch.setattr(weights, "resolve_checkpoint", lambda model, **kw: asked.update(kw, model=model) or "path")
    assert logic.downloadWeights("medsam-vit-b", url="https://example.org/w.pth") == "path"
    assert asked["cache_dir"] == str(tmp_path) and asked["url"] == "https://example.org/w.pth"
    notice = logic.downloadNotice("medsam-vit-b")
    assert "medsam_vit_b.pth" in notice and "Apache-2.0" in notice


def test_explicit_checkpoint_is_reported(module, tmp_path):
    from MedSAMSegmentLib.settings import MedSAMSettings

    checkpoint = tmp_path / "mine.pth"
    logic = module.MedSAMSegmentLogic(MedSAMSettings(model="medsam-vit-b", checkpoint=str(checkpoint)))
    assert logic.weightsStatus("medsam-vit-b").endswith("(missing)")
    checkpoint.write_bytes(b"x")
    assert logic.weightsStatus("medsam-vit-b").endswith(str(checkpoint))
