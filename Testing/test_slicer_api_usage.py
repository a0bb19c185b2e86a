"""Every Slicer API the Qt layer uses exists in Slicer's source, in every supported Slicer version.

The Qt layer cannot run here (no Slicer application), so scripts/slicer_api_check.py reads it with `ast`
and checks each Slicer name against Testing/data/slicer_api_names.json, extracted from Slicer's own
source (scripts/extract_slicer_api.py) at a recorded commit. The negative tests prove the check fails on
the mistakes it exists for.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import extract_slicer_api  # noqa: E402
from slicer_api_check import API_FILE, Api, checkSource, qtLayerFiles  # noqa: E402

MINIMUM_SLICER = "5.10"  # Python 3.12; Slicer 5.8 has Python 3.9, below the package's requires-python


@pytest.fixture(scope="module")
def api():
    return Api()


def problems(source, api):
    return [use.problem for use in checkSource(source, "snippet.py", api) if use.problem]


# -- the real Qt layer ----------------------------------------------------------------------------
def test_qt_layer_files_exist():
    names = {str(p.relative_to(ROOT)) for p in qtLayerFiles()}
    assert {"MedSAMSegment/MedSAMSegment.py", "SegmentEditorMedSAM/SegmentEditorMedSAM.py",
            "SegmentEditorMedSAM/SegmentEditorMedSAMLib/SegmentEditorEffect.py",
            "MedSAMSegment/MedSAMSegmentLib/dependencies.py"} <= names


@pytest.mark.parametrize("path", qtLayerFiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_qt_layer_uses_only_existing_slicer_api(path, api):
    uses = checkSource(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)), api)
    found = [f"{u.file}:{u.line}: {u.problem}" for u in uses if u.problem]
    assert not found, "\n".join(found)


def test_the_check_covers_the_effect(api):
    """The effect's Slicer calls are really checked (not silently skipped for want of a type)."""
    path = ROOT / "SegmentEditorMedSAM/SegmentEditorMedSAMLib/SegmentEditorEffect.py"
    checked = {(u.scope, u.name) for u in checkSource(path.read_text(encoding="utf-8"), "effect", api)}
    for expected in [("qSlicerSegmentEditorScriptedEffect", "saveStateForUndo"),
                     ("qSlicerSegmentEditorScriptedEffect", "modifySelectedSegmentByLabelmap"),
                     ("qSlicerSegmentEditorScriptedEffect", "setParameter"),
                     ("qSlicerSegmentEditorScriptedEffect", "sourceVolumeImageData"),
                     ("qSlicerSegmentEditorScriptedEffect", "addActor2D"),
                     ("qSlicerSegmentEditorAbstractEffect", "ModificationModeAdd"),
                     ("qSlicerSegmentEditorAbstractEffect", "ModificationModeRemove"),
                     ("vtkMRMLSegmentEditorNode", "GetSourceVolumeNode"),
                     ("qMRMLSliceWidget", "sliceLogic"),
                     ("vtkMRMLSliceLogic", "GetSliceOffset"),
                     ("slicer.util", "createProgressDialog"),
                     ("AbstractScriptedSegmentEditorEffect", "xyToRas")]:
        assert expected in checked, expected


# -- the check fails on mistakes ------------------------------------------------------------------
@pytest.mark.parametrize("snippet, message", [
    ("self.scriptedEffect.modifySelectedSegmentByLabelMap(l, 0)", "modifySelectedSegmentByLabelMap does not exist"),
    ("scriptedEffect.saveStateForUndoo()", "saveStateForUndoo does not exist"),
    ("import slicer\nslicer.util.createProgresDialog()", "slicer.util.createProgresDialog does not exist"),
    ("from slicer.util import arrayFromVolumee", "arrayFromVolumee does not exist"),
    ("import slicer\nslicer.vtkMRMLSegmentationNod()", "slicer.vtkMRMLSegmentationNod does not exist"),
    ("segmentationNode.GetSegmentaton()", "GetSegmentaton does not exist"),
    ("node = slicer.mrmlScene.AddNewNodeByClass('vtkMRMLMarkupsROINode')\nnode.SetSizee(1, 2, 3)",
     "vtkMRMLMarkupsROINode.SetSizee does not exist"),
    ("combo = slicer.qMRMLNodeComboBox()\ncombo.noneEnabeld = True", "qMRMLNodeComboBox.noneEnabeld does not exist"),
    ("combo = slicer.qMRMLNodeComboBox()\ncombo.connect('currentNodeChangd(vtkMRMLNode*)', f)", "no signal 'currentNodeChangd'"),
    ("slicer.util.createProgressDialog(parent=None)\nslicer.util.confirmOkCancelDisplay('x', windowTitel='t')", None),
    ("from slicer.packaging import pip_ensure\n", "not in Slicer 5.10"),
    ("try:\n    from slicer.packaging import pip_ensure\nexcept ImportError:\n    pass\npip_ensure('x', requestor='me')",
     "takes no keyword 'requestor'"),
    ("slicer.util.pip_install('x', no_deps_requirements='y')", "not accepted by Slicer 5.10"),
    ("slicer.modules.segmenteditr.widgetRepresentation()", "slicer.modules.segmenteditr does not exist"),
    ("slicer.app.cachePth", "qSlicerApplication.cachePth does not exist"),
    ("slicer.vtkMRMLColorLogic.GetColorTableNodeID(1)", "members were not extracted"),
    ("PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmaton=True)", "takes no keyword 'askConfirmaton'"),
    ("class W(ScriptedLoadableModuleWidget):\n    def setup(self):\n        self.resourcePth('x')",
     "ScriptedLoadableModuleWidget.resourcePth does not exist"),
])
def test_misspelt_or_unsupported_api_is_flagged(snippet, message, api):
    snippet = "import slicer\n" + snippet
    found = problems(snippet, api)
    if message is None:  # confirmOkCancelDisplay takes **kwargs: a misspelt keyword cannot be caught
        assert not found
        return
    assert any(message in p for p in found), found


@pytest.mark.parametrize("snippet", [
    "scriptedEffect.saveStateForUndo()",
    "self.scriptedEffect.modifySelectedSegmentByLabelmap(l, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd)",
    "slicer.app.processEvents()\nslicer.app.testingEnabled()\nslicer.app.cachePath",
    "try:\n    import slicer.packaging\n    slicer.packaging.pip_ensure('x', requester='me')\nexcept ImportError:\n    pass",
    "if hasattr(slicer, 'packaging'):\n    slicer.packaging.pip_ensure('x')",
    "packaging = getattr(slicer, 'packaging', None)",
    "d = slicer.util.createProgressDialog(parent=None, maximum=3)\nd.wasCanceled",
    "segmentationNode.GetDisplayNode().SetOpacity(0.5)",
    "segmentationDisplayNode = segmentationNode.GetDisplayNode()\nsegmentationDisplayNode.SetVisibility2DOutline(True)",
])
def test_correct_and_guarded_api_passes(snippet, api):
    assert not problems("import slicer\n" + snippet, api)


def test_getattr_with_default_still_requires_the_name_in_current_slicer(api):
    found = problems("import slicer\nf = getattr(slicer.util, 'pipEnsureTypo', None)", api)
    assert any("pipEnsureTypo does not exist" in p for p in found)


# -- the data itself ------------------------------------------------------------------------------
def test_api_names_record_where_they_came_from(api):
    data = api.data
    assert data["repository"] == "https://github.com/Slicer/Slicer"
    assert re.fullmatch(r"[0-9a-f]{40}", data["commit"])
    assert (ROOT / data["generator"]).is_file()
    refs = [older["ref"] for older in data["older"]]
    assert MINIMUM_SLICER in refs, "the oldest supported Slicer must be checked"
    assert all(re.fullmatch(r"[0-9a-f]{40}", older["commit"]) for older in data["older"])
    assert "qSlicerSegmentEditorAbstractEffect" in data["classes"]
    assert "createProgressDialog" in data["python"]["slicer.util"]


def test_documented_minimum_version_is_the_checked_one():
    text = (ROOT / "docs" / "SLICER.md").read_text(encoding="utf-8")
    assert f"Slicer {MINIMUM_SLICER}" in text


def test_header_parser_reads_vtk_and_qt_declarations():
    header = """
    class VTK_EXPORT vtkMRMLFooNode : public vtkMRMLNode
    {
    public:
      static vtkMRMLFooNode* New();
      vtkTypeMacro(vtkMRMLFooNode, vtkMRMLNode);
      vtkGetMacro(Size, int);
      vtkSetClampMacro(Opacity, double, 0.0, 1.0);
      vtkBooleanMacro(Visible, bool);
      vtkGetObjectMacro(Segmentation, vtkSegmentation);
      virtual vtkMRMLNode* GetReferenced(const char* role); // a comment (with parens)
      enum { ModeA = 0, ModeB };
      int Inline() { return 1; }
    protected:
      void Hidden();
    };
    class Q_EXPORT qMRMLFooWidget : public QWidget
    {
      Q_OBJECT
      Q_PROPERTY(bool noneEnabled READ noneEnabled WRITE setNoneEnabled)
    public:
      Q_INVOKABLE vtkMRMLNode* currentNode() const;
      void notExposed();
    public slots:
      void setMRMLScene(vtkMRMLScene* scene);
    signals:
      void currentNodeChanged(vtkMRMLNode*);
    };
    """
    vtkClass = extract_slicer_api.parseClass(header, "vtkMRMLFooNode")
    assert vtkClass["bases"] == ["vtkMRMLNode"]
    assert {"GetSize", "SetOpacity", "GetOpacityMinValue", "VisibleOn", "VisibleOff", "GetSegmentation",
            "GetReferenced", "ModeA", "ModeB", "Inline"} <= vtkClass["members"]
    assert "Hidden" not in vtkClass["members"] and "New" not in vtkClass["members"]
    assert vtkClass["returns"]["GetReferenced"] == "vtkMRMLNode"
    assert vtkClass["returns"]["GetSegmentation"] == "vtkSegmentation"
    qtClass = extract_slicer_api.parseClass(header, "qMRMLFooWidget")
    assert qtClass["qobject"] and qtClass["bases"] == ["QWidget"]
    assert {"noneEnabled", "currentNode", "setMRMLScene"} <= qtClass["members"]
    assert "notExposed" not in qtClass["members"]
    assert qtClass["signals"] == {"currentNodeChanged"}


def test_vtk_members_used_exist_in_slicer_core(api):
    """Second opinion from the real wrapped classes (PyPI slicer-core, a recent Slicer build)."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    missing = []
    for path in qtLayerFiles():
        for use in checkSource(path.read_text(encoding="utf-8"), str(path), api):
            cls = getattr(slicer, use.scope, None) if use.scope.startswith("vtk") and not use.problem else None
            if cls is not None and "(" not in use.name and not hasattr(cls, use.name):
                missing.append(f"{use.scope}.{use.name}")
    assert not missing, missing


@pytest.mark.skipif(not os.environ.get("SLICER_GIT_DIR"), reason="set SLICER_GIT_DIR to a Slicer/Slicer clone")
def test_committed_names_match_a_fresh_extraction(tmp_path):
    """With a Slicer clone at hand: regenerating from the recorded commits gives the committed file."""
    committed = json.loads(API_FILE.read_text(encoding="utf-8"))
    output = tmp_path / "names.json"
    args = ["--slicer-git", os.environ["SLICER_GIT_DIR"], "--ref", committed["commit"], "--output", str(output)]
    for older in committed["older"]:
        args += ["--older", older["commit"]]
    if os.environ.get("PYTORCH_GIT_DIR"):
        args += ["--pytorch-git", os.environ["PYTORCH_GIT_DIR"]]
    subprocess.run([sys.executable, str(ROOT / "scripts/extract_slicer_api.py"), *args], check=True)
    fresh = json.loads(output.read_text(encoding="utf-8"))
    assert fresh["classes"] == committed["classes"]
    assert fresh["python"] == committed["python"]
