"""A user's session with the MedSAM effect, built the way Slicer builds it, for the effect tests.

Start-up (the extension's modules load, the effect registers at startupCompleted), a volume shown
in the three slice views (rotated to it as on load, or RAS-aligned), a segmentation with segments, a
Segment Editor whose active effect is MedSAM, and helpers to drag a box and click the buttons.
"""

import numpy as np
import slicer
import vtk

from . import threadcheck
from .environment import SlicerEnvironment


class EffectSession:
    def __init__(self, core, arrayKji, ijkToRas, segmentNames=("tumour",), rotateToVolume=True, predictor=None,
                 settings=None, root=None):
        self.core = core
        self.arrayKji = arrayKji
        self.ijkToRas = np.asarray(ijkToRas, dtype=float)
        self.segmentNames = segmentNames
        self.rotateToVolume = rotateToVolume
        self.predictor = predictor
        self.settings = dict(settings or {})
        self.environment = SlicerEnvironment(core) if root is None else SlicerEnvironment(core, root=root)

    def __enter__(self):
        environment = self.environment.__enter__()
        try:
            for key, value in self.settings.items():
                slicer.app.settings().setValue(f"MedSAMSegment/{key}", value)
            self.factory = environment.startSlicer()
            self.volume = self.core.addVolume(self.arrayKji, self.ijkToRas, name="Source")
            self.segmentation = self.core.addSegmentation("Segmentation", referenceVolume=self.volume)
            self.segmentIds = {}
            for index, name in enumerate(self.segmentNames):
                color = ((1.0, 0.5, 0.0), (0.0, 0.6, 1.0), (0.3, 1.0, 0.3))[index % 3]
                self.segmentIds[name] = self.segmentation.GetSegmentation().AddEmptySegment("", name, color)
            environment.views.showVolume(self.volume, rotateToVolume=self.rotateToVolume)
            self.editor = environment.segmentEditor(self.segmentation, self.volume)
            self.editor.setCurrentSegmentID(self.segmentIds[self.segmentNames[0]])
            self.editor.setActiveEffectByName("MedSAM")
            self.effect = self.editor.activeEffect
            assert self.effect is not None, "the MedSAM effect is active"
            self._observeMrmlThreads()
            if self.predictor is not None:
                injectPredictor(self.effect.self(), self.predictor)
        except BaseException:
            self.environment.__exit__(None, None, None)
            raise
        return self

    def _observeMrmlThreads(self):
        """MRML changes of the scene and the session's nodes must happen on the main thread."""
        scene, modified = self.core.scene, vtk.vtkCommand.ModifiedEvent
        segmentation = self.segmentation.GetSegmentation()
        observed = (
            (scene, (scene.NodeAddedEvent, scene.NodeRemovedEvent), "scene"),
            (self.segmentation, (modified,), "segmentation node"),
            (segmentation, (segmentation.SegmentModified, segmentation.SegmentAdded, segmentation.SegmentRemoved),
             "segmentation"),
            (self.volume, (modified,), "source volume"),
            (self.editor.parameterSetNode, (modified, slicer.vtkMRMLSegmentEditorNode.EffectParameterModified),
             "segment editor node"),
        )
        # Removed at __exit__: a scene freed later by the garbage collector, in whatever thread it
        # happens to run, must not count against the next test.
        self._threadObservations = [(obj, threadcheck.observeOnMainThread(obj, events, label))
                                    for obj, events, label in observed]

    @property
    def threadViolations(self):
        return list(threadcheck.violations)

    def __exit__(self, *exc):
        for obj, tags in getattr(self, "_threadObservations", []):
            for tag in tags:
                obj.RemoveObserver(tag)
        self._threadObservations = []
        try:
            if getattr(self, "editor", None) is not None:
                self.editor.close()
        finally:
            self.environment.__exit__(*exc)
        return False

    # -- what the user does ---------------------------------------------------------------------------------
    @property
    def views(self):
        return self.environment.views

    def view(self, orientation):
        return self.views.byOrientation(orientation)

    def button(self, text):
        """An options button by its label (Preview, Apply, Cancel, ...)."""
        from .qtstubs import QAbstractButton

        for button in self.effect.optionsFrame().findChildren(QAbstractButton):
            if button.text == text or button.text.startswith(text):
                return button
        raise LookupError(f"no button {text!r} in the effect's options")

    def click(self, text):
        self.button(text).click()

    def dragIndexBox(self, orientation, ijkLow, ijkHigh, steps=3):
        """Scroll the view to the slice of ijkLow and drag from the XY of ijkLow to that of ijkHigh.
        Returns (press xy, release xy) as the interactor reported them (integers)."""
        widget = self.view(orientation)
        rasLow, rasHigh = self.ijkToRasPoint(ijkLow), self.ijkToRasPoint(ijkHigh)
        widget.jumpToRas(rasLow)
        start, end = widget.rasToXy(rasLow), widget.rasToXy(rasHigh)
        widget.drag(start, end, steps=steps)
        return tuple(int(round(v)) for v in start), tuple(int(round(v)) for v in end)

    def ijkToRasPoint(self, ijk):
        return (self.ijkToRas @ np.r_[np.asarray(ijk, dtype=float), 1.0])[:3]

    def segmentArray(self, name=None):
        """A segment on the source volume's voxels (K, J, I), exported by Slicer's own logic."""
        segmentId = self.segmentIds[name or self.segmentNames[0]]
        with self.core.installed():
            return slicer.util.arrayFromSegmentBinaryLabelmap(self.segmentation, segmentId, self.volume)

    def segmentationState(self):
        """Every segment's labelmap (bytes) and the segment list: compare for bit-identity."""
        segmentation = self.segmentation.GetSegmentation()
        state = []
        for index in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(index)
            labelmap = segmentation.GetSegment(segmentId).GetRepresentation("Binary labelmap")
            scalars = labelmap.GetPointData().GetScalars() if labelmap is not None else None
            data = bytes(memoryview(scalars)) if scalars is not None else b""
            state.append((segmentId, labelmap.GetExtent() if labelmap is not None else None, data))
        return state


def injectPredictor(pythonEffect, predictor):
    """Make the effect's controller use `predictor` (the tests' shared LiteMedSAM on the CPU)."""
    from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic
    from MedSAMSegmentLib.settings import MedSAMSettings

    controller = pythonEffect.controller
    controller.settingsProvider = lambda: MedSAMSettings(device="cpu")
    controller.logicFactory = lambda settings: MedSAMLogic(settings, predictor=predictor)
