"""Access to `segment_anything.modeling` without running the package's `__init__`.

`segment_anything/__init__.py` imports the automatic mask generator, which needs torchvision;
torchvision is neither needed here nor installable beside every torch build. The modeling
sub-package itself only needs torch, so we register a bare parent package whose `__path__`
points at the installed files and import the sub-package from there.
"""

import importlib
import sys
import types

from ..errors import DependencyError

_PACKAGE = "segment_anything"


def _installed_package_dir():
    import importlib.metadata as metadata

    try:
        dist = metadata.distribution("segment-anything")
    except metadata.PackageNotFoundError:
        return None
    init = dist.locate_file(f"{_PACKAGE}/__init__.py")
    return str(init.parent) if init.exists() else None


def sam_modeling():
    """Return the `segment_anything.modeling` module (torch only, no torchvision)."""
    already = sys.modules.get(f"{_PACKAGE}.modeling")
    if already is not None:
        return already
    if _PACKAGE not in sys.modules:
        package_dir = _installed_package_dir()
        if package_dir is None:
            raise DependencyError(
                "segment-anything is not installed: pip install segment-anything"
            )
        parent = types.ModuleType(_PACKAGE)
        parent.__path__ = [package_dir]
        parent.__package__ = _PACKAGE
        sys.modules[_PACKAGE] = parent
    return importlib.import_module(f"{_PACKAGE}.modeling")
