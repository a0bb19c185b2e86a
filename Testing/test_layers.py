"""The core's groups depend on each other in one direction only (docs/ARCHITECTURE.md):

    model  <-  engine  <-  fileio, mrml_bridge  <-  front ends (cli, batch, effect, web, the Slicer modules)

model knows nothing of slices or files, the engine nothing of files or MRML, and no part of the core
imports a front end. Read from the source (ast), so a lazy import inside a function counts too.
"""

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parent.parent / "MedSAMSegment" / "MedSAMSegmentLib"
SHARED = {"MedSAMSegmentLib", "MedSAMSegmentLib.errors"}  # the package itself (its __version__) and the exceptions
ALLOWED = {
    "model": {"model"},
    "engine": {"model", "engine"},
    "fileio": {"engine", "fileio"},
    "mrml_bridge": {"model", "engine", "fileio", "mrml_bridge", "settings"},
    "settings.py": {"model", "engine"},  # the model / device / cache settings every front end shares
}


def _module_name(path):
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name):
    """Whether `from package import name` names a module or package (not a function or constant)."""
    where = LIB.parent.joinpath(*name.split("."))
    return where.with_suffix(".py").exists() or where.is_dir()


def imported_modules(path):
    """Absolute names of the MedSAMSegmentLib modules a file imports (anywhere in it)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names if _is_module(f"{module}.{alias.name}")}
    return {m for m in found if m == "MedSAMSegmentLib" or m.startswith("MedSAMSegmentLib.")}


def _group(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("group", sorted(ALLOWED))
def test_a_core_group_imports_only_the_groups_below_it(group):
    wrong = []
    paths = [LIB / group] if group.endswith(".py") else sorted((LIB / group).glob("*.py"))
    for path in paths:
        for module in imported_modules(path):
            if module in SHARED or _group(module) in ALLOWED[group]:
                continue
            wrong.append(f"{path.relative_to(LIB)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_sees_relative_lazy_and_absolute_imports():
    """The check itself: the three spellings of an import resolve to the module they name."""
    sample = LIB / "engine" / "propagation.py"
    found = imported_modules(sample)
    assert "MedSAMSegmentLib.engine.key_boxes" in found  # a lazy relative import inside a function
    assert "MedSAMSegmentLib.errors" in found
    key_boxes = imported_modules(LIB / "engine" / "key_boxes.py")
    assert "MedSAMSegmentLib.engine.propagation" in key_boxes
    controller = imported_modules(LIB / "effect" / "controller.py")
    assert {"MedSAMSegmentLib.engine.geometry", "MedSAMSegmentLib.mrml_bridge.mrml_io"} <= controller  # from .. import x
