"""Static checks of the Slicer packaging: no Slicer build is needed, so CI proves what it can here.

- every .py of the repository compiles;
- each module's CMakeLists.txt lists every script and resource of its folder, and only existing files;
- CMakeLists.txt, MedSAMSegment.s4ext and the catalog entry MedSAMSegment.json agree, and the catalog
  entry follows Slicer's schema (recorded in Testing/data/slicer_api_names.json);
- icons are PNGs of the size Slicer expects; module files define the classes Slicer looks for;
- the Qt layer imports neither torch nor the model at module import time.
"""

import ast
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import cmake_file_lists  # noqa: E402
from slicer_api_check import API_FILE, qtLayerFiles  # noqa: E402

SKIPPED_DIRS = {".venv", ".git", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis"}
S4EXT_TO_CMAKE = {"homepage": "EXTENSION_HOMEPAGE", "contributors": "EXTENSION_CONTRIBUTORS",
                  "category": "EXTENSION_CATEGORY", "iconurl": "EXTENSION_ICONURL", "status": "EXTENSION_STATUS",
                  "description": "EXTENSION_DESCRIPTION", "screenshoturls": "EXTENSION_SCREENSHOTURLS",
                  "depends": "EXTENSION_DEPENDS"}


def pythonFiles():
    for path in sorted(ROOT.rglob("*.py")):
        if not SKIPPED_DIRS & set(path.relative_to(ROOT).parts):
            yield path


def cmakeVariables(text):
    return {m.group(1): m.group(2) for m in re.finditer(r'set\(\s*(EXTENSION_\w+)\s+"([^"]*)"\s*\)', text)}


def s4extFields(text):
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


@pytest.fixture(scope="module")
def topCMake():
    return (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def test_every_python_file_compiles():
    failures = []
    for path in pythonFiles():
        try:
            compile(path.read_text(encoding="utf-8"), str(path), "exec")
        except SyntaxError as exc:
            failures.append(f"{path.relative_to(ROOT)}:{exc.lineno}: {exc.msg}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("module", cmake_file_lists.MODULES)
def test_cmake_lists_every_module_file(module):
    problems = cmake_file_lists.differences(module)
    assert not problems, "\n".join(problems) + "\nRun: python scripts/cmake_file_lists.py --write"


def test_file_list_check_sees_a_new_file(tmp_path):
    """The check above fails for an unlisted file and for a listed file that does not exist."""
    module = tmp_path / "Mod"
    (module / "ModLib").mkdir(parents=True)
    (module / "Mod.py").write_text("")
    (module / "ModLib" / "new.py").write_text("")
    (module / "CMakeLists.txt").write_text(
        "set(MODULE_NAME Mod)\nset(MODULE_PYTHON_SCRIPTS\n  ${MODULE_NAME}.py\n  gone.py\n  )\n"
        "set(MODULE_PYTHON_RESOURCES\n  )\n")
    problems = cmake_file_lists.differences("Mod", root=tmp_path)
    assert any("ModLib/new.py is not listed" in p for p in problems)
    assert any("gone.py does not exist" in p for p in problems)


@pytest.mark.parametrize("module", cmake_file_lists.MODULES)
def test_module_cmake_builds_a_tested_scripted_module(module):
    text = (ROOT / module / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(rf"set\(MODULE_NAME {module}\)", text)
    build = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.S).group(1).split()
    for word in ("NAME", "${MODULE_NAME}", "SCRIPTS", "${MODULE_PYTHON_SCRIPTS}", "RESOURCES",
                 "${MODULE_PYTHON_RESOURCES}", "WITH_GENERIC_TESTS"):
        assert word in build
    assert re.search(r"if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text, re.S)


def test_top_level_cmake_adds_each_module(topCMake):
    added = re.findall(r"^add_subdirectory\((\w+)\)", topCMake, re.M)
    assert added == list(cmake_file_lists.MODULES)
    assert re.search(r"^project\(MedSAMSegment\)", topCMake, re.M)
    for include in ("${Slicer_USE_FILE}", "${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"):
        assert f"include({include})" in topCMake
    variables = cmakeVariables(topCMake)
    assert variables["EXTENSION_CATEGORY"] == "Segmentation"
    assert variables["EXTENSION_DEPENDS"] == "PyTorch"
    for url in [variables["EXTENSION_HOMEPAGE"], variables["EXTENSION_ICONURL"], *variables["EXTENSION_SCREENSHOTURLS"].split()]:
        assert url.startswith("https://") and "&" not in url  # Slicer: no URL parameters
    assert variables["EXTENSION_ICONURL"].endswith("/Resources/Icons/MedSAMSegment.png")


def test_s4ext_agrees_with_cmake(topCMake):
    variables = cmakeVariables(topCMake)
    fields = s4extFields((ROOT / "MedSAMSegment.s4ext").read_text(encoding="utf-8"))
    for field, variable in S4EXT_TO_CMAKE.items():
        assert fields[field] == variables[variable], f"s4ext {field} differs from {variable}"
    assert fields["scm"] == "git"
    assert fields["scmurl"].startswith("https://") and fields["scmurl"].endswith(".git")
    assert variables["EXTENSION_ICONURL"].startswith(fields["scmurl"][:-4].replace("github.com", "raw.githubusercontent.com"))


def test_catalog_entry_follows_slicer_schema(topCMake):
    """MedSAMSegment.json is what the ExtensionsIndex takes; checked against the schema
    read from Slicer's source (required keys, no unknown key, types, enums)."""
    entry = json.loads((ROOT / "MedSAMSegment.json").read_text(encoding="utf-8"))
    recorded = json.loads(API_FILE.read_text(encoding="utf-8"))["catalogSchema"]
    schema = recorded["schema"]
    assert entry["$schema"].startswith(schema["$id"].rstrip("#"))
    assert "5.10" in recorded["presentIn"]  # the oldest supported Slicer knows this schema version
    assert set(schema["required"]) <= set(entry)
    assert set(entry) <= set(schema["properties"])
    types = {"string": str, "array": list, "boolean": bool, "integer": int}
    for key, value in entry.items():
        rule = schema["properties"][key]
        assert isinstance(value, types[rule["type"]]), key
        assert value in rule.get("enum", [value])
        if rule["type"] == "integer":
            assert rule.get("minimum", value) <= value <= rule.get("maximum", value)
    fields = s4extFields((ROOT / "MedSAMSegment.s4ext").read_text(encoding="utf-8"))
    variables = cmakeVariables(topCMake)
    assert entry["category"] == variables["EXTENSION_CATEGORY"]
    assert entry["scm_url"] == fields["scmurl"]
    assert entry["build_dependencies"] == variables["EXTENSION_DEPENDS"].split()


@pytest.mark.parametrize("path, size", [
    ("Resources/Icons/MedSAMSegment.png", 128),
    ("MedSAMSegment/Resources/Icons/MedSAMSegment.png", 128),
    ("SegmentEditorMedSAM/SegmentEditorMedSAMLib/SegmentEditorEffect.png", 21),
])
def test_icons_are_pngs_of_the_expected_size(path, size):
    header = (ROOT / path).read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (size, size)


@pytest.mark.parametrize("path, classes", [
    ("MedSAMSegment/MedSAMSegment.py",
     ["MedSAMSegment", "MedSAMSegmentWidget", "MedSAMSegmentLogic", "MedSAMSegmentTest"]),
    ("SegmentEditorMedSAM/SegmentEditorMedSAM.py", ["SegmentEditorMedSAM", "SegmentEditorMedSAMTest"]),
    ("SegmentEditorMedSAM/SegmentEditorMedSAMLib/SegmentEditorEffect.py", ["SegmentEditorEffect"]),
])
def test_module_files_define_what_slicer_looks_up(path, classes):
    """Slicer finds <Module>, <Module>Widget, <Module>Logic, <Module>Test by name, and the effect class
    in SegmentEditorEffect.py must be called SegmentEditorEffect."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    defined = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert set(classes) <= defined


def test_effect_is_registered_from_its_file_and_named_medsam():
    module = (ROOT / "SegmentEditorMedSAM/SegmentEditorMedSAM.py").read_text(encoding="utf-8")
    assert 'slicer.app.connect("startupCompleted()", self.registerEditorEffect)' in module
    assert '"SegmentEditorMedSAMLib", "SegmentEditorEffect.py"' in module
    effect = (ROOT / "SegmentEditorMedSAM/SegmentEditorMedSAMLib/SegmentEditorEffect.py").read_text(encoding="utf-8")
    assert 'scriptedEffect.name = "MedSAM"' in effect
    assert 'setActiveEffectByName("MedSAM")' in module


def _topLevelImports(path):
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", qtLayerFiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_qt_layer_imports_no_heavy_package_at_load(path):
    """Slicer imports module files at start-up, before dependencies may exist: torch, the model and the
    engine are imported inside the functions that need them."""
    heavy = {"torch", "cv2", "skimage", "segment_anything", "SimpleITK"}
    engine = ("MedSAMSegmentLib.engine.predictor", "MedSAMSegmentLib.model.models", "MedSAMSegmentLib.mrml_bridge.mrml_logic")
    imports = _topLevelImports(path)
    assert not {name.split(".")[0] for name in imports} & heavy
    assert not [name for name in imports if name.startswith(engine)]


def test_qt_free_helpers_do_not_load_torch():
    code = ("import sys; sys.path[:0] = ['MedSAMSegment']\n"
            "import MedSAMSegmentLib.dependencies, MedSAMSegmentLib.settings, MedSAMSegmentLib.model.registry\n"
            "import MedSAMSegmentLib.effect.controller, MedSAMSegmentLib.effect.rubberband\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
