"""The harness itself behaves as the Slicer source it cites (slicer_harness/*.py), on real MRML.

Fast (no model): the effect tests rely on these rules, so they are pinned here.
"""

import sys

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

import slicer  # noqa: E402
import vtk  # noqa: E402

from slicer_harness import SlicerEnvironment, qtstubs  # noqa: E402
from slicer_harness.scriptedeffect import ScriptedEffect  # noqa: E402


@pytest.fixture
def effect(slicer_core):
    """A scripted effect named "MedSAM" on a real segment editor node (no Python class behind it)."""
    node = slicer_core.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "SegmentEditor")
    scripted = ScriptedEffect()
    scripted.name = "MedSAM"
    scripted.setParameterSetNode(node)
    return scripted


def test_parameters_live_on_the_editor_node_with_slicers_names_and_default_rules(effect):
    node = effect.parameterSetNode()
    events = []
    node.AddObserver(slicer.vtkMRMLSegmentEditorNode.EffectParameterModified, lambda *args: events.append(1))

    effect.setParameterDefault("Mode", "propagate")
    assert node.GetAttribute("MedSAM.Mode") == "propagate" and len(events) == 1
    effect.setParameterDefault("Mode", "slice")  # defined: a default does not override it
    effect.setParameter("Mode", "propagate")  # unchanged: no event
    assert effect.parameter("Mode") == "propagate" and len(events) == 1

    effect.setParameterDefault("Model", "")  # an empty default is never stored ...
    assert node.GetAttribute("MedSAM.Model") is None and not effect.parameterDefined("Model")
    assert effect.parameter("Model") == "" and effect.criticals  # ... and reading it is a qCritical

    node.SetAttribute("Shared", "7")  # a common parameter is the fallback
    assert effect.parameter("Shared") == "7" and effect.integerParameter("Shared") == 7
    effect.setParameter("Around", 10)
    effect.setParameter("Ratio", 0.5)
    assert (node.GetAttribute("MedSAM.Around"), node.GetAttribute("MedSAM.Ratio")) == ("10", "0.5")
    effect.setParameter("Text", "1.5")
    effect.criticals.clear()
    assert effect.integerParameter("Text") == 0 and effect.criticals  # QString::toInt fails -> 0
    assert effect.doubleParameter("Text") == 1.5


def test_node_references_use_the_effect_prefix_then_the_common_role(effect, slicer_core):
    node = effect.parameterSetNode()
    roi = slicer_core.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    effect.setNodeReference("ROI", roi)
    assert node.GetNodeReferenceID("MedSAM.ROI") == roi.GetID() and effect.nodeReference("ROI") is roi
    effect.setNodeReference("ROI", None)
    assert effect.nodeReference("ROI") is None
    node.SetNodeReferenceID("ROI", roi.GetID())
    assert effect.nodeReference("ROI") is roi


def test_views_rotated_to_a_volume_or_ras_aligned(slicer_core):
    rotation = np.eye(4)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    rotation[:2, :2] = [[c, -s], [s, c]]
    volume = slicer_core.addVolume(np.zeros((5, 40, 40), np.int16), rotation @ np.diag([1.0, 1.0, 3.0, 1.0]))
    with SlicerEnvironment(slicer_core) as environment:
        views = environment.views
        views.showVolume(volume, rotateToVolume=True)
        red = views.byOrientation("Axial")
        xAxis = slicer.util.arrayFromVTKMatrix(red.mrmlSliceNode().GetSliceToRAS())[:3, 0]
        assert abs(abs(xAxis @ rotation[:3, 0]) - 1) < 1e-6, "the axial view follows the volume's I axis"
        views.showVolume(volume, rotateToVolume=False)
        assert np.allclose(np.abs(slicer.util.arrayFromVTKMatrix(red.mrmlSliceNode().GetSliceToRAS())[:3, :3]),
                           np.eye(3))
        ras = red.xyToRas((120.0, 80.0))
        assert np.allclose(red.rasToXy(ras), (120.0, 80.0))
        assert views.byOrientation("Coronal").normal() @ [0, 1, 0] == pytest.approx(1.0)
        events = []
        red.interactor.AddObserver(vtk.vtkCommand.LeftButtonPressEvent,
                                   lambda caller, event: events.append((caller.GetEventPosition(), caller.GetShiftKey())))
        red.sendEvent(vtk.vtkCommand.LeftButtonPressEvent, (10.4, 20.6), shift=True)
        assert events == [((10, 21), 1)]


def test_the_environment_is_restored_after_the_block(slicer_core):
    before = {name: sys.modules.get(name) for name in ("qt", "ctk", "SegmentEditorEffects")}
    app = getattr(slicer, "app", None)
    path = list(sys.path)
    with SlicerEnvironment(slicer_core, views=False) as environment:
        import qt

        assert qt.QPushButton is qtstubs.QPushButton and slicer.app is environment.app
        assert slicer.util.errorDisplay("x") is None and environment.dialogs.errors == ["x"]
    assert {name: sys.modules.get(name) for name in before} == before
    assert getattr(slicer, "app", None) is app and sys.path == path


def test_qt_stubs_emit_what_effects_rely_on():
    combo, log = qtstubs.QComboBox(), []
    combo.connect("currentIndexChanged(int)", log.append)
    combo.addItem("A", "a")  # Qt selects the first item added, with the signal
    combo.addItem("B", "b")
    assert log == [0] and combo.currentData == "a" and combo.findData("b") == 1
    assert combo.blockSignals(True) is False
    combo.setCurrentIndex(1)
    combo.blockSignals(False)
    assert log == [0] and combo.currentData == "b"

    layout, toggled = qtstubs.QHBoxLayout(), []
    first, second = qtstubs.QRadioButton("1"), qtstubs.QRadioButton("2")
    layout.addWidget(first)
    layout.addWidget(second)
    second.connect("toggled(bool)", toggled.append)
    first.click()
    second.click()
    assert (first.checked, second.checked, toggled) == (False, True, [True])

    button, clicks = qtstubs.QPushButton("Apply"), []
    button.clicked.connect(lambda: clicks.append(1))
    button.enabled = False
    button.click()  # a disabled button does nothing
    button.setEnabled(True)
    button.click()
    assert clicks == [1] and button.isEnabled()
    spin = qtstubs.QSpinBox()
    spin.setRange(1, 5)
    spin.value = 10
    assert spin.value == 5  # clamped, as QSpinBox does


def test_gui_and_mrml_changes_off_the_main_thread_are_recorded(slicer_core):
    import threading

    from slicer_harness import threadcheck

    with SlicerEnvironment(slicer_core, views=False):
        label = qtstubs.QLabel()
        node = slicer_core.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
        threadcheck.observeOnMainThread(node, (vtk.vtkCommand.ModifiedEvent,), "volume")
        label.text = "main thread: fine"
        node.Modified()
        assert threadcheck.violations == []
        worker = threading.Thread(target=lambda: (setattr(label, "text", "worker"), node.Modified()), name="worker")
        worker.start()
        worker.join()
        assert [(what, thread) for what, thread, _where in threadcheck.violations] == [
            ("QLabel.text set", "worker"), ("volume ModifiedEvent", "worker")]
