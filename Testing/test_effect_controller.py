"""The effect controller (MedSAMSegmentLib.effect.controller) on real MRML with the real LiteMedSAM,
through the Qt-free editor adapter (the same vtkSlicerSegmentEditorLogic Slicer 5.10's effects write
through): a drag, preview, apply, undo/redo, key boxes, and runs whose target changes or that are
cancelled while the worker thread runs. The Slicer-faithful drive of the Qt effect is in
test_effect_in_slicer*.py; this file tests the behaviour every front end shares."""

import threading

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")
pytest.importorskip("torch")

from MedSAMSegmentLib.demo import SAMPLE_IMAGE, SAMPLE_LABEL, official_box  # noqa: E402
from MedSAMSegmentLib.effect.controller import MedSAMEffectController  # noqa: E402
from MedSAMSegmentLib.effect.editors import LogicEditor  # noqa: E402
from MedSAMSegmentLib.engine.metrics import dice  # noqa: E402
from MedSAMSegmentLib.errors import InputError  # noqa: E402
from MedSAMSegmentLib.mrml_bridge import mrml_io  # noqa: E402
from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic  # noqa: E402
from MedSAMSegmentLib.settings import MedSAMSettings  # noqa: E402


class GatedPredictor:
    """The shared real predictor, with a gate the test opens: lets a test act while a run is held
    inside the worker thread (between slices), without timing."""

    def __init__(self, predictor):
        self._predictor = predictor
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def embeddings(self, keys, image_of):
        self.entered.set()
        self.gate.wait(30)
        return self._predictor.embeddings(keys, image_of)

    def embedding(self, key, image):
        return self.embeddings([key], lambda _k: image)[0]


@pytest.fixture
def scene(slicer_core):
    from engine_support import shared_predictor

    volume = slicer_core.volumesLogic.AddArchetypeVolume(str(SAMPLE_IMAGE), "brain1")
    labelNode = slicer_core.volumesLogic.AddArchetypeVolume(str(SAMPLE_LABEL), "label")
    label = mrml_io.volumeArray(labelNode) > 0
    segmentation = slicer_core.addSegmentation(referenceVolume=volume)
    segmentId = segmentation.GetSegmentation().AddEmptySegment("", "tumour")
    otherId = segmentation.GetSegmentation().AddEmptySegment("", "other")
    editorLogic, editorNode = slicer_core.addSegmentEditor(segmentation, volume)
    editorNode.SetSelectedSegmentID(segmentId)
    predictor = GatedPredictor(shared_predictor())
    controller = MedSAMEffectController(
        LogicEditor(editorLogic), settingsProvider=lambda: MedSAMSettings(device="cpu"),
        logicFactory=lambda settings: MedSAMLogic(settings, predictor=predictor))
    controller.setDefaults()
    controller.editor.setParameter("SlicesAround", "2")  # a short propagation keeps the tests quick
    yield dict(core=slicer_core, volume=volume, label=label, segmentation=segmentation, segmentId=segmentId,
               otherId=otherId, editorLogic=editorLogic, editorNode=editorNode, controller=controller,
               predictor=predictor)
    predictor.gate.set()


def axialXyToRas(volume, k):
    """XY-to-RAS of an axial view through slice k of the volume (1 display pixel = 0.5 mm)."""
    ijkToRas = mrml_io.volumeIjkToWorldMatrix(volume)
    origin = ijkToRas @ np.array([0.0, 0.0, k, 1.0])
    xyToRas = np.diag([0.5, 0.5, 1.0, 1.0])
    xyToRas[:3, 3] = origin[:3] - np.array([100.0, 100.0, 0.0])
    return xyToRas


def drag(controller, volume, box, k, addBox=None):
    """Press at the box's (i0, j0) corner, release at (i1, j1), on slice k of an axial view."""
    xyToRas = axialXyToRas(volume, k)
    rasToXy = np.linalg.inv(xyToRas)
    ijkToRas = mrml_io.volumeIjkToWorldMatrix(volume)
    i0, j0, i1, j1 = box
    start, end = ((rasToXy @ ijkToRas @ np.array([i, j, k, 1.0]))[:2] for i, j in ((i0, j0), (i1, j1)))
    assert controller.press("axial", start)
    assert controller.move("axial", end) is not None
    return controller.release("axial", end, xyToRas, addBox=addBox)


def segment(scene):
    return scene["core"].segmentArray(scene["segmentation"], scene["segmentId"], scene["volume"]) > 0


def test_drag_preview_apply_undo_redo(scene):
    controller, label = scene["controller"], scene["label"]
    i0, j0, k0, i1, j1, k1 = official_box(label)
    middle = (k0 + k1) // 2
    prompt, added = drag(controller, scene["volume"], (i0, j0, i1, j1), middle)
    assert not added and prompt.axis == "k" and prompt.box == (i0, j0, middle, i1, j1, middle)
    controller.editor.setParameter("Mode", "slice")

    outcome = controller.run("preview")
    assert outcome.state == "previewed", outcome.message
    preview = controller.previewNode()
    assert preview is not None and preview.GetDisplayNode().GetOpacity() < 1
    assert not segment(scene).any(), "a preview writes nothing into the segment"

    outcome = controller.run("apply")  # the preview is up to date: applied without model work
    assert outcome.state == "applied" and controller.previewNode() is None
    mask = segment(scene)
    assert dice(mask[middle], label[middle]) > 0.3
    assert mask.sum() == mask[middle].sum(), "only the box's slice"

    editorLogic = scene["editorLogic"]
    editorLogic.Undo()
    assert not segment(scene).any()
    editorLogic.Redo()
    assert np.array_equal(segment(scene), mask)


def test_a_second_run_is_refused_and_a_segment_change_during_a_run_discards_the_result(scene):
    controller, label, predictor = scene["controller"], scene["label"], scene["predictor"]
    i0, j0, k0, i1, j1, k1 = official_box(label)
    drag(controller, scene["volume"], (i0, j0, i1, j1), (k0 + k1) // 2)
    before = scene["core"].segmentArray(scene["segmentation"], scene["otherId"], scene["volume"]).copy()

    predictor.gate.clear()
    predictor.entered.clear()
    job = controller.startRun("apply")
    assert predictor.entered.wait(30), "the worker reached the model"
    with pytest.raises(InputError, match="already running"):
        controller.startRun("preview")
    scene["editorNode"].SetSelectedSegmentID(scene["otherId"])  # the user picks another segment
    predictor.gate.set()
    assert job.wait(120)
    outcome = controller.finishRun(job)
    assert outcome.state == "discarded" and "another segment" in outcome.message
    assert not segment(scene).any()
    assert np.array_equal(scene["core"].segmentArray(scene["segmentation"], scene["otherId"], scene["volume"]), before)
    assert not controller.busy


def test_cancel_mid_run_and_scene_close_change_nothing(scene):
    controller, label, predictor = scene["controller"], scene["label"], scene["predictor"]
    i0, j0, k0, i1, j1, k1 = official_box(label)
    drag(controller, scene["volume"], (i0, j0, i1, j1), (k0 + k1) // 2)

    predictor.gate.clear()
    job = controller.startRun("apply")
    controller.cancel()  # the Cancel button while running
    predictor.gate.set()
    assert controller.finishRun(job).state == "cancelled"
    assert not segment(scene).any()

    predictor.gate.clear()
    predictor.entered.clear()
    job = controller.startRun("apply")
    assert predictor.entered.wait(30)
    scene["core"].scene.Clear(False)  # File > Close scene while the model works
    predictor.gate.set()
    assert job.wait(120)
    outcome = controller.finishRun(job)
    assert outcome.state == "discarded" and "scene" in outcome.message


def test_added_boxes_are_kept_per_slice_in_the_first_boxs_orientation(scene):
    controller, label = scene["controller"], scene["label"]
    i0, j0, k0, i1, j1, k1 = official_box(label)
    middle = (k0 + k1) // 2
    drag(controller, scene["volume"], (i0, j0, i1, j1), middle)
    prompt, added = drag(controller, scene["volume"], (i0 - 10, j0, i1, j1 + 5), k0, addBox=True)
    assert added and [b.keySlice for b in controller.addedBoxes()] == [k0]
    drag(controller, scene["volume"], (i0, j0, i1, j1), k0, addBox=True)  # again on k0: replaces it
    assert [b.box for b in controller.addedBoxes()] == [(i0, j0, k0, i1, j1, k0)]
    controller.removeKeyBox(k0)
    assert controller.addedBoxes() == []
    with pytest.raises(InputError, match="No added box"):
        controller.removeKeyBox(k0)
    # A new first box drops the added ones (they corrected the old one).
    drag(controller, scene["volume"], (i0, j0, i1, j1), k1, addBox=True)
    drag(controller, scene["volume"], (i0, j0, i1, j1), middle)
    assert controller.addedBoxes() == []


def test_the_slice_in_view_is_pre_encoded_and_its_preview_needs_no_encoder(scene):
    """While the effect is active, the controller has the slice in view (and its neighbours) encoded in
    the background; a box drawn there then runs the decoder only."""
    from MedSAMSegmentLib.engine.embedding_cache import content_key
    from MedSAMSegmentLib.engine.intensity import auto_window

    controller, volume, predictor = scene["controller"], scene["volume"], scene["predictor"]
    array = mrml_io.volumeArray(volume)
    window = auto_window(array)
    k = 2  # a slice no other test encodes: far from the lesion
    key = content_key(predictor.spec, window.apply(array[k]))
    if key in predictor.cache:
        pytest.skip("slice 2 is already encoded in this process")
    controller.viewChanged(axialXyToRas(volume, k), (0.0, 0.0))
    assert controller.preEncoder.wait_idle(120)
    assert key in predictor.cache

    encodedBefore = predictor.encoded
    drag(controller, volume, (100, 100, 140, 140), k)
    controller.editor.setParameter("Mode", "slice")
    assert controller.run("preview").state == "previewed"
    assert predictor.encoded == encodedBefore, "the preview used the pre-encoded slice"
    controller.deactivate()
    assert controller.preEncoder is None and controller.previewNode() is None


def test_an_added_box_reruns_only_the_slices_it_can_change(scene):
    """Issue 12 in the effect: with a preview shown, a box added on another slice updates the preview,
    and the slices on the far side of the first box are re-used from the last run, not decoded again."""
    controller, label = scene["controller"], scene["label"]
    i0, j0, k0, i1, j1, k1 = official_box(label)
    middle = (k0 + k1) // 2
    drag(controller, scene["volume"], (i0, j0, i1, j1), middle)
    controller.editor.setParameter("SlicesAround", str(max(middle - k0, k1 - middle)))
    first = controller.run("preview")
    assert first.state == "previewed", first.message
    drag(controller, scene["volume"], (i0 - 15, j0 - 10, i1, j1 + 30), k0, addBox=True)
    controller.dropStalePreview()
    second = controller.run("preview")
    assert second.state == "previewed", second.message
    assert k0 in second.info["keySlices"] and middle in second.info["keySlices"]
    assert not [k for k in second.info["slices"] if k > middle], "the far side was re-used, not re-run"
    assert controller.previewNode() is not None


def test_a_drag_that_ends_without_a_release_lets_pre_encoding_go_on(scene):
    """A press holds background pre-encoding to the slice in view; a drag that never gets its release
    (the web view lost the mouse) or boxes cleared mid-drag must let the neighbours go on again."""
    from MedSAMSegmentLib.engine.pre_encoder import PreEncoder

    controller = scene["controller"]
    controller.preEncoder = PreEncoder(lambda: scene["predictor"])  # no request: no worker thread
    try:
        assert controller.press("axial", (10.0, 10.0)) and controller.preEncoder._focused
        controller.abandonDrag("coronal")  # another view's drag: nothing to end
        assert controller.dragging("axial") and controller.preEncoder._focused
        controller.abandonDrag("axial")
        assert not controller.dragging("axial") and not controller.preEncoder._focused
        assert controller.press("axial", (10.0, 10.0)) and controller.preEncoder._focused
        controller.clearBoxes()
        assert not controller.dragging("axial") and not controller.preEncoder._focused
    finally:
        controller.preEncoder.stop()
        controller.preEncoder = None


def test_runs_on_the_same_voxels_and_rule_compute_the_intensity_window_once(scene, monkeypatch):
    """The window's statistics read the whole volume: one computation serves every run (and the
    background pre-encoding) until the rule or the voxels change."""
    from MedSAMSegmentLib.mrml_bridge import mrml_logic

    computed = []
    original = mrml_logic.intensityWindow
    monkeypatch.setattr(mrml_logic, "intensityWindow", lambda volume, spec: computed.append(spec) or original(volume, spec))
    controller, label = scene["controller"], scene["label"]
    i0, j0, k0, i1, j1, k1 = official_box(label)
    controller.editor.setParameter("Mode", "slice")
    for grow in (0, 2):
        drag(controller, scene["volume"], (i0 - grow, j0 - grow, i1 + grow, j1 + grow), (k0 + k1) // 2)
        assert controller.run("preview").state == "previewed"
    assert computed == [("auto", None)]
    controller.editor.setParameter("Intensity", "CT")  # another rule: another window
    assert controller.run("preview").state == "previewed"
    mrml_io.volumeArray(scene["volume"])[0, 0, 0] += 1  # the voxels change in place
    scene["volume"].GetImageData().Modified()
    assert controller.run("preview").state == "previewed"
    assert computed == [("auto", None), ("auto", "CT"), ("auto", "CT")]


def test_a_run_refills_the_stale_preview_on_show_and_a_cancelled_one_removes_it(scene):
    """A box drawn while a preview is shown, then Preview at once (the web app's "this slice" release):
    the old preview stays on show until the result refills the same node, is never applied meanwhile,
    and goes if the run is cancelled instead."""
    controller, label, predictor = scene["controller"], scene["label"], scene["predictor"]
    i0, j0, k0, i1, j1, k1 = official_box(label)
    middle = (k0 + k1) // 2
    controller.editor.setParameter("Mode", "slice")
    drag(controller, scene["volume"], (i0, j0, i1, j1), middle)
    assert controller.run("preview").state == "previewed"
    preview = controller.previewNode()

    drag(controller, scene["volume"], (i0 - 3, j0 - 3, i1 + 3, j1 + 3), middle)
    predictor.gate.clear()
    job = controller.startRun("preview")
    assert controller.pending is None, "a stale preview is never applied"
    assert controller.previewNode() is preview
    predictor.gate.set()
    job.wait(120)
    assert controller.finishRun(job).state == "previewed"
    assert controller.previewNode() is preview and controller.pending[2] == controller.signature()

    drag(controller, scene["volume"], (i0 - 6, j0 - 6, i1 + 6, j1 + 6), middle)
    predictor.gate.clear()
    job = controller.startRun("preview")
    controller.cancel()
    predictor.gate.set()
    assert controller.finishRun(job).state == "cancelled"
    assert controller.previewNode() is None and preview.GetScene() is None
    assert not segment(scene).any()


def test_a_job_calls_back_in_its_worker_once_the_work_has_ended():
    """A front end's event loop is woken by the job itself (no thread of its own waiting for it)."""
    from MedSAMSegmentLib.effect.job import Job

    gate, calls = threading.Event(), []
    job = Job(lambda progress, cancelled: gate.wait(30) and "done")
    job.whenFinished(lambda: calls.append((threading.current_thread() is job.thread, job.finished, job.result)))
    job.start()
    assert calls == []
    gate.set()
    job.thread.join(30)
    assert calls == [(True, True, "done")]
    job.whenFinished(lambda: calls.append("registered after the end"))
    assert calls[-1] == "registered after the end"
