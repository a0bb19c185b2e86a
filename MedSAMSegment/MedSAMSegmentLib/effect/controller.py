"""The MedSAM effect's behaviour, without Qt: one controller for every front end.

The Slicer effect (SegmentEditorMedSAM) and a web front end are thin adapters: they turn their mouse
events into press/move/release calls, their buttons into preview/apply/cancel, and keep their own event
loop turning while a run's Job works in a worker thread. Everything the effect *does* is here:

- the box: press/move/release in any slice view, given the view's XY-to-RAS matrix; the box is the
  index box of the rectangle's four corners (prompts.boxFromRasCorners), or a markups ROI;
  added key-slice boxes (drawn with "add box" on, on other slices of the same axis);
- a run: startRun() reads MRML on the main thread into a request (MedSAMLogic.prepare) and a snapshot
  of what the result will be written into, then starts a Job whose work touches no MRML; finishRun()
  (main thread again) writes the result only if the segmentation, the segment, the source volume and
  its geometry are still those of the snapshot, and otherwise discards it with a message;
- the preview: a separate translucent segmentation node; Apply writes through the editor adapter
  (editors.py) in one undo step, honouring the editor's masking;
- background pre-encoding of the slice in view (pre_encoder.py), when available.
"""

from dataclasses import dataclass

import numpy as np

from ..engine import geometry
from ..errors import InputError
from ..mrml_bridge import mrml_io
from . import labelmaps, prompts
from .job import Job

PARAMETER_DEFAULTS = {
    "PromptSource": "draw",  # draw | roi
    "Mode": "propagate",  # prompts.MODES
    "Range": "around",  # prompts.RANGES
    "SlicesAround": "10",
    "ApplyMode": "add",  # prompts.APPLY_MODES
    "Intensity": "auto",  # mrml_logic.WINDOW_CHOICES: MedSAM's own preprocessing unless asked otherwise
    "Box": "",  # BoxPrompt.toParameter() of the first box (drawn)
    "AddBoxes": "",  # added key-slice boxes, BoxPrompt.toParameter() joined by ";"
    "AddBox": "0",  # "1": a drawn box is added as a key-slice box instead of replacing the first box
    "Model": "",  # "" = the model chosen in the MedSAMSegment module
    "Device": "",  # "" = the device chosen in the MedSAMSegment module
}
ROI_REFERENCE = "ROI"
PREVIEW_REFERENCE = "Preview"
# After a box or a run, background pre-encoding of the neighbours of the slice in view waits this long:
# a box drawn right away (a second try, a key-slice box) must not wait for a neighbour's encoder step,
# which the background thread's low priority can stretch to several times its length.
NEIGHBOURS_AFTER_S = 1.0
# What a result depends on: a preview computed for other values is stale.
SIGNATURE_PARAMETERS = ("PromptSource", "Box", "AddBoxes", "Mode", "Range", "SlicesAround", "Intensity",
                        "Model", "Device")


@dataclass
class RunSnapshot:
    """What a run was started for, compared again before its result is written."""

    action: str  # "preview" | "apply"
    segmentationNode: object
    segmentId: str
    volumeNode: object
    imageData: object
    geometry: tuple  # (shape, ijk-to-world bytes)
    box: tuple
    axis: str
    signature: tuple
    windowKey: tuple = None


@dataclass
class RunOutcome:
    """What finishRun did: "previewed", "applied", "cancelled", "discarded" or "failed", and why."""

    state: str
    message: str
    info: dict = None


def _windowKey(volumeNode, spec):
    """What an intensity window depends on: the volume's voxels (its image data, unmodified) and the rule.
    The image data is named by its C++ object (`__this__`): its Python wrapper, hence id(), may be new."""
    imageData = volumeNode.GetImageData()
    return volumeNode.GetID(), imageData.__this__ if imageData else None, imageData.GetMTime() if imageData else None, spec


def _geometry(volumeNode):
    return (mrml_io.volumeArray(volumeNode).shape, mrml_io.volumeIjkToWorldMatrix(volumeNode).round(9).tobytes())


class MedSAMEffectController:
    """State and actions of the MedSAM effect on one segment editor (through an editor adapter).

    settingsProvider() -> MedSAMSettings (model, device, ... with the effect's overrides applied);
    logicFactory(settings) -> MedSAMLogic (tests and front ends may inject a predictor there).
    """

    def __init__(self, editor, settingsProvider=None, logicFactory=None, onStatus=None):
        from ..mrml_bridge.mrml_logic import MedSAMLogic
        from ..settings import MedSAMSettings

        self.editor = editor
        self.settingsProvider = settingsProvider or MedSAMSettings
        self.logicFactory = logicFactory or MedSAMLogic
        self.onStatus = onStatus
        self.status = ""
        self.job = None  # the run in progress
        self.snapshot = None
        self.pending = None  # (labelmap, slab, signature) shown in the preview
        self.lastResult = None  # the last run's PropagationResult: an added box re-runs only what it changes
        self._drags = {}  # view key -> start xy
        self.preEncoder = None
        self._preEncoderKey = None
        self._windows = {}  # window key -> the last intensity window computed (pre-encoding, runs)
        self._ready = False  # dependencies found installed (pre-encoding waits for them)

    # -- parameters -----------------------------------------------------------------------------
    def setDefaults(self):
        for name, value in PARAMETER_DEFAULTS.items():
            self.editor.setParameterDefault(name, value)

    def parameter(self, name):
        value = self.editor.parameter(name)
        return value if value else PARAMETER_DEFAULTS.get(name, "")

    def setStatus(self, text):
        self.status = text
        if self.onStatus is not None:
            self.onStatus(text)

    @property
    def busy(self):
        return self.job is not None

    # -- boxes ----------------------------------------------------------------------------------
    def prompt(self):
        """The first box (drawn) or the ROI's box, as a BoxPrompt; None when there is none yet."""
        volumeNode = self.editor.sourceVolumeNode()
        if self.parameter("PromptSource") == "roi":
            roiNode = self.editor.nodeReference(ROI_REFERENCE)
            if roiNode is None or volumeNode is None:
                return None
            return prompts.roiPrompt(self.logicFactory(self.settingsProvider()), volumeNode, roiNode)
        return prompts.BoxPrompt.fromParameter(self.parameter("Box"))

    def addedBoxes(self):
        text = self.parameter("AddBoxes")
        return [prompts.BoxPrompt.fromParameter(part) for part in text.split(";") if part.strip()]

    def press(self, viewKey, xy):
        """A left-button press in a slice view starts a box (refused while a run is going)."""
        if self.busy:
            return False
        self._drags[viewKey] = tuple(xy)
        if self.preEncoder is not None:  # the box's run must not wait for a neighbour's encoder step
            self.preEncoder.focus()
        return True

    def abandonDrag(self, viewKey=None):
        """A drag ended without a release (the view lost the mouse; None: every view): forget it,
        and let background pre-encoding of the neighbours go on."""
        if viewKey is None:
            self._drags.clear()
        elif self._drags.pop(viewKey, None) is None:
            return
        if self.preEncoder is not None:
            self.preEncoder.unfocus()

    def dragging(self, viewKey):
        return viewKey in self._drags

    def move(self, viewKey, xy):
        """The rectangle's four display corners while dragging, else None."""
        start = self._drags.get(viewKey)
        if start is None:
            return None
        (x0, y0), (x1, y1) = start, tuple(xy)
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]

    def release(self, viewKey, xy, xyToRas, addBox=None):
        """Finish a drag: (BoxPrompt of the rectangle, added). The box becomes the first box, or, with
        addBox (default: the "AddBox" toggle) and a first box already there, an added key-slice box.
        xyToRas: the view's 4x4 XY-to-RAS matrix (vtkMRMLSliceNode.GetXYToRAS)."""
        corners = self.move(viewKey, xy)
        self._drags.pop(viewKey, None)
        if self.preEncoder is not None:  # a run started by this release takes the model first
            self.preEncoder.unfocus(after_s=NEIGHBOURS_AFTER_S)
        if corners is None:
            return None, False
        volumeNode = self.editor.sourceVolumeNode()
        if volumeNode is None:
            raise InputError("Select a source volume first")
        xyToRas = np.asarray(xyToRas, dtype=float).reshape(4, 4)
        ras = [(xyToRas @ np.array([x, y, 0.0, 1.0]))[:3] for x, y in corners]
        prompt = prompts.boxFromRasCorners(volumeNode, ras, xyToRas[:3, 2])
        adding = self.parameter("AddBox") == "1" if addBox is None else bool(addBox)
        first = self.prompt() if adding else None
        if first is not None:
            self.addKeyBox(prompt, first)
            self.setStatus(f"Added a box on slice {prompt.keySlice} along {prompt.axis.upper()}: Preview to update")
            return prompt, True
        self.editor.setParameter("Box", prompt.toParameter())
        self.editor.setParameter("AddBoxes", "")
        self.setStatus(f"Box on slice {prompt.keySlice} along {prompt.axis.upper()}: Preview or Apply")
        return prompt, False

    def addKeyBox(self, prompt, first=None):
        first = first or self.prompt()
        if first is None:
            raise InputError("Draw the first box before adding boxes")
        if prompt.axis != first.axis:
            raise InputError(f"Added boxes must be drawn in the first box's orientation (slices along "
                             f"{first.axis.upper()}, this one along {prompt.axis.upper()})")
        boxes = [b for b in self.addedBoxes() if b.keySlice != prompt.keySlice] + [prompt]
        self.editor.setParameter("AddBoxes", ";".join(b.toParameter() for b in boxes))

    def removeKeyBox(self, sliceIndex):
        boxes = self.addedBoxes()
        kept = [b for b in boxes if b.keySlice != int(sliceIndex)]
        if len(kept) == len(boxes):
            raise InputError(f"No added box on slice {sliceIndex}")
        self.editor.setParameter("AddBoxes", ";".join(b.toParameter() for b in kept))

    def clearBoxes(self):
        self.editor.setParameter("Box", "")
        self.editor.setParameter("AddBoxes", "")
        self.abandonDrag()

    # -- runs -----------------------------------------------------------------------------------
    def signature(self):
        """What a result depends on besides the voxels: parameters, target and prompt nodes."""
        roiNode = self.editor.nodeReference(ROI_REFERENCE)
        nodes = (self.editor.segmentationNode(), self.editor.sourceVolumeNode())
        return (tuple(self.parameter(n) for n in SIGNATURE_PARAMETERS), self.editor.selectedSegmentId(),
                tuple(node.GetID() if node else None for node in nodes),
                roiNode.GetID() if roiNode else None, roiNode.GetMTime() if roiNode else None)

    def _request(self, logic):
        """(MedSAMLogic request, prompt axis, processed box) for the current prompt; main thread."""
        volumeNode = self.editor.sourceVolumeNode()
        segmentationNode = self.editor.segmentationNode()
        if volumeNode is None or segmentationNode is None:
            raise InputError("Select a segmentation and a source volume first")
        if not self.editor.selectedSegmentId():
            raise InputError("Select a segment first")
        prompt = self.prompt()
        if prompt is None:
            raise InputError("Select or place an ROI first" if self.parameter("PromptSource") == "roi"
                             else "Draw a box in a slice view first")
        mode = self.parameter("Mode")
        box, keySlice = prompts.requestBox(prompt, mode, self.parameter("Range"),
                                           int(self.parameter("SlicesAround") or 0),
                                           mrml_io.volumeArray(volumeNode).shape)
        options = {}
        added = self.addedBoxes() if mode == "propagate" else []
        if added:
            options["addBoxes"] = [b.box for b in added]
        request = logic.prepare(volumeNode, indexBox=box, axis=prompt.axis, keySlice=keySlice,
                                window=self.parameter("Intensity"), **options)
        return request

    def startRun(self, action):
        """Read MRML and start the model in a worker thread; returns the Job (poll it, then finishRun).
        InputError for anything that cannot run, and while another run is going."""
        if action not in ("preview", "apply"):
            raise ValueError(f"unknown action {action!r}")
        if self.busy:
            raise InputError("MedSAM is already running: wait for it or cancel it")
        if action == "apply" and self.pending is not None and self.pending[2] == self.signature():
            self.snapshot = None
            return None  # the preview is the result: finishRun applies it without model work
        logic = self.logicFactory(self.settingsProvider())
        request = self._request(logic)
        volumeNode = self.editor.sourceVolumeNode()
        windowKey = _windowKey(volumeNode, request.windowSpec)
        request.window = self._windows.get(windowKey)  # its statistics are not computed again for each run
        self.snapshot = RunSnapshot(action, self.editor.segmentationNode(), self.editor.selectedSegmentId(),
                                    volumeNode, volumeNode.GetImageData(), _geometry(volumeNode), tuple(request.box),
                                    request.axis, self.signature(), windowKey)
        previous = self.lastResult  # the engine re-uses its slices only if the run is the same but for added boxes
        if self.preEncoder is not None:  # no background encoder step competes with the run
            self.preEncoder.pause()
        if self.pending is not None and self.pending[2] != self.signature():
            # A stale preview is never applied; its node stays on show until this run's result refills it
            # (removed and created again, every view would render twice), or finishRun removes it.
            self.pending = None
        self.job = Job(lambda progress, cancelled: logic.run(request, progress, cancelled, previous)).start()
        self.setStatus("Segmenting (the model is loaded first if needed)...")
        return self.job

    def cancelRun(self):
        if self.job is not None:
            self.job.cancel()

    def _whyStale(self, snapshot):
        """Why the snapshot's target has changed since the run started, or "" if it has not."""
        segmentationNode = self.editor.segmentationNode()
        volumeNode = self.editor.sourceVolumeNode()
        scene = self.editor.scene()
        if scene is None or snapshot.segmentationNode.GetScene() is not scene or snapshot.volumeNode.GetScene() is not scene:
            return "the scene was closed"
        if segmentationNode is not snapshot.segmentationNode:
            return "another segmentation was selected"
        if volumeNode is not snapshot.volumeNode:
            return "another source volume was selected"
        if self.editor.selectedSegmentId() != snapshot.segmentId:
            return "another segment was selected"
        if segmentationNode.GetSegmentation().GetSegment(snapshot.segmentId) is None:
            return "the segment was removed"
        if volumeNode.GetImageData() is not snapshot.imageData or _geometry(volumeNode) != snapshot.geometry:
            return "the source volume changed"
        return ""

    def finishRun(self, job):
        """On the main thread once job has finished (or was cancelled): preview or apply its result if
        its target is unchanged. Returns a RunOutcome; errors of the work are raised."""
        snapshot, self.snapshot = self.snapshot, None
        self.job = None
        if self.preEncoder is not None:
            self.preEncoder.unfocus(after_s=NEIGHBOURS_AFTER_S)
            self.preEncoder.resume()
        if job is None:  # apply of an up-to-date preview
            self._applyPending()
            self.setStatus("Applied the preview (Undo reverts it)")
            return RunOutcome("applied", self.status)
        try:
            return self._useResult(job, snapshot)
        except BaseException:
            self._dropReplacedPreview()
            raise

    def _useResult(self, job, snapshot):
        if job.cancelled:
            self._dropReplacedPreview()
            self.setStatus("Cancelled: nothing was changed")
            return RunOutcome("cancelled", self.status)
        if job.error is not None:
            raise job.error
        why = self._whyStale(snapshot)
        if why:
            self._dropReplacedPreview()
            self.setStatus(f"Result discarded because {why} during the run: nothing was changed")
            return RunOutcome("discarded", self.status)
        mask, info = job.result
        self.lastResult = info.get("result")
        if info.get("intensityWindow") is not None:
            self._rememberWindow(snapshot.windowKey, info["intensityWindow"])
        segmentationNode, volumeNode = snapshot.segmentationNode, snapshot.volumeNode
        reference = self.editor.referenceImage()
        if reference is None:
            raise InputError("The Segment Editor cannot align the source volume with the segmentation")
        labelmap = labelmaps.maskToLabelmap(mask, volumeNode, segmentationNode, reference)
        slab = labelmaps.slabLabelmap(snapshot.box, snapshot.axis, volumeNode, segmentationNode, reference)
        self.pending = (labelmap, slab, snapshot.signature)
        first, last = prompts.BoxPrompt(snapshot.axis, snapshot.box).sliceRange
        summary = (f"{int(mask.sum())} voxels on slices {first}-{last} along {snapshot.axis.upper()} "
                   f"({info.get('window', '')}, {job.seconds:.1f} s)")
        if snapshot.action == "preview":
            self._showPreview(labelmap)
            self.setStatus(f"Preview: {summary}. Apply or Cancel")
            return RunOutcome("previewed", self.status, info)
        self._applyPending()
        self.setStatus(f"Applied: {summary} (Undo reverts it)")
        return RunOutcome("applied", self.status, info)

    def run(self, action, poll=None, interval=0.05):
        """startRun + wait + finishRun, for the console and tests. poll(job) is called while waiting
        (a front end's event loop: return True to cancel)."""
        job = self.startRun(action)
        while job is not None and not job.wait(interval):
            if poll is not None and poll(job):
                job.cancel()
                break
        return self.finishRun(job)

    # -- preview and apply ----------------------------------------------------------------------
    def previewNode(self):
        return self.editor.nodeReference(PREVIEW_REFERENCE)

    def _showPreview(self, labelmap):
        segmentationNode = self.editor.segmentationNode()
        segmentId = self.editor.selectedSegmentId()
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId) if segmentId else None
        previewNode = self.previewNode()
        if previewNode is None:
            previewNode = labelmaps.createPreviewNode(self.editor.scene(), segmentationNode)
            self.editor.setNodeReference(PREVIEW_REFERENCE, previewNode)
        name, color = (segment.GetName(), segment.GetColor()) if segment else ("MedSAM", (1.0, 1.0, 0.0))
        labelmaps.updatePreview(previewNode, labelmap, name, color)

    def _applyPending(self):
        labelmap, slab, _signature = self.pending
        self.editor.saveStateForUndo()  # once: remove + add below are one undo step
        if self.parameter("ApplyMode") == "set":
            # The editor's own "set" mode would clear the segment outside these slices too.
            self.editor.modifySelectedSegment(slab, "remove")
        self.editor.modifySelectedSegment(labelmap, "add")
        self.removePreview()

    def _dropReplacedPreview(self):
        """A stale preview left on show for a run that was to refill it (startRun) goes when the run
        ends without a preview."""
        if self.pending is None:
            self.removePreview()

    def removePreview(self):
        self.pending = None
        previewNode = self.previewNode()
        if previewNode is not None:
            self.editor.setNodeReference(PREVIEW_REFERENCE, None)
            scene = previewNode.GetScene()
            if scene is not None:
                scene.RemoveNode(previewNode)

    def dropStalePreview(self):
        """Remove a preview computed for other parameters, segment or ROI."""
        if self.pending is not None and self.pending[2] != self.signature():
            self.removePreview()

    def cancel(self):
        """The Cancel button: stop a run, or discard the preview and the boxes."""
        if self.busy:
            self.cancelRun()
            return
        self.removePreview()
        self.clearBoxes()
        self.setStatus("Cleared")

    # -- background pre-encoding ----------------------------------------------------------------
    def viewChanged(self, xyToRas, viewCenterXy=None):
        """A slice view shows another slice: pre-encode it and its neighbours in the background."""
        if self.busy or not self._dependenciesReady():
            return
        volumeNode = self.editor.sourceVolumeNode()
        if volumeNode is None:
            return
        try:
            from ..engine.pre_encoder import PreEncoder
        except ImportError:
            return
        xyToRas = np.asarray(xyToRas, dtype=float).reshape(4, 4)
        x, y = viewCenterXy if viewCenterXy is not None else (0.0, 0.0)
        centre = xyToRas @ np.array([x, y, 0.0, 1.0])
        ijkToWorld = mrml_io.volumeIjkToWorldMatrix(volumeNode)
        axis = geometry.closest_index_axis(ijkToWorld, xyToRas[:3, 2])
        position = prompts.AXIS_POSITION[axis]
        index = int(np.rint((np.linalg.inv(ijkToWorld) @ centre)[position]))
        volume = mrml_io.volumeArray(volumeNode)
        if not 0 <= index < volume.shape[2 - position]:
            return
        from ..mrml_bridge.mrml_logic import intensityWindow, windowSpec

        settings = self.settingsProvider()
        if self.preEncoder is None or self._preEncoderKey != settings.predictor_key:
            if self.preEncoder is not None:
                self.preEncoder.stop()
            logic = self.logicFactory(settings)
            self.preEncoder, self._preEncoderKey = PreEncoder(lambda: logic.predictor), settings.predictor_key
        spec = windowSpec(volumeNode, self.parameter("Intensity"))
        memoKey = _windowKey(volumeNode, spec)

        def window():  # the window's statistics are computed once, in the background thread
            known = self._windows.get(memoKey)
            return known if known is not None else self._rememberWindow(memoKey, intensityWindow(volume, spec))

        self.preEncoder.request(volume, window, axis, index)

    def _rememberWindow(self, key, window):
        """Keep the last intensity window computed (one volume's, one rule's): runs and pre-encoding
        of the same voxels share it (its statistics read the whole volume)."""
        self._windows.clear()
        self._windows[key] = window
        return window

    def _dependenciesReady(self):
        """Pre-encode only once torch and the weights package are there (it never installs anything);
        checked until true, then remembered."""
        if not self._ready:
            from .. import dependencies

            self._ready = dependencies.ready()
        return self._ready

    def deactivate(self):
        """The effect is switched off: stop pre-encoding, cancel a run, drop the preview, the boxes (their
        drawings go with the effect: a box kept but not shown would be used unseen) and what the last
        run left in memory (a full-volume result)."""
        self.shutdown()
        self.removePreview()
        if self.editor.editorNode() is not None:
            self.clearBoxes()

    def shutdown(self):
        """Stop background work and drop what the controller holds, touching no MRML (the effect is
        being deleted: its scene may be gone)."""
        if self.preEncoder is not None:
            self.preEncoder.stop()
            self.preEncoder = None
        self.cancelRun()
        self._drags.clear()
        self.pending = None
        self.lastResult = None
        self.snapshot = None
