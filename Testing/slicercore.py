"""Real Slicer MRML for tests, without the Slicer application (PyPI slicer-core).

`import slicer` from slicer-core gives the MRML and module-logic classes but none of the
application start-up: no scene, no application logic, no module logics, hence no segmentation
converter rules. SlicerCore wires a scene the way the application does (see
../shared/docs/SLICER_CORE.md), VtkMessages captures VTK errors so tests can assert there
were none, and `installed()` sets the `slicer.mrmlScene` / `slicer.modules` / `slicer.app`
globals that slicer.util helpers read, only for the duration of a `with` block.
"""

import contextlib
import threading
import types

import numpy as np
import slicer
import vtk
from vtkmodules.util.misc import calldata_type

# Matrix conversions are the library's own (re-exported for the tests).
from MedSAMSegmentLib.mrml_bridge.mrml_io import toNumpyMatrix, toVtkMatrix  # noqa: F401

# (name under slicer.modules, module-logic name in the application logic, logic class)
MODULE_LOGICS = (
    ("volumes", "Volumes", "vtkSlicerVolumesLogic"),
    ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("markups", "Markups", "vtkSlicerMarkupsLogic"),
    ("subjecthierarchy", "SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("transforms", "Transforms", "vtkSlicerTransformLogic"),
)

_rulesLock = threading.Lock()


def keepConverterRulesUnique():
    """Keep one instance of each segmentation converter rule in the process-wide factory.

    Each segmentations logic that gets a scene registers its rules again and the factory
    does not deduplicate; duplicates make conversions slower and ambiguous. Called after
    every scene set-up, so the process always holds each rule once.
    """
    with _rulesLock:
        factory = slicer.vtkSegmentationConverterFactory.GetInstance()
        seen = set()
        for rule in list(factory.GetConverterRules()):
            name = rule.GetClassName()
            if name in seen:
                factory.UnregisterConverterRule(rule)
            seen.add(name)


class VtkMessages:
    """Collect VTK error and warning messages while active (context manager).

    VTK reports each error through vtkLogger (stderr) and vtkOutputWindow; the logger's
    stderr is silenced and the output window's events are recorded instead.
    """

    def __init__(self):
        self.errors = []
        self.warnings = []
        self._tags = []

    def __enter__(self):
        window = vtk.vtkOutputWindow.GetInstance()
        self._savedVerbosity = vtk.vtkLogger.GetCurrentVerbosityCutoff()
        vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
        self._savedDisplayMode = window.GetDisplayMode()
        window.SetDisplayModeToNever()

        @calldata_type(vtk.VTK_STRING)
        def onError(_caller, _event, text):
            self.errors.append(text)

        @calldata_type(vtk.VTK_STRING)
        def onWarning(_caller, _event, text):
            self.warnings.append(text)

        self._tags = [
            window.AddObserver(vtk.vtkCommand.ErrorEvent, onError),
            window.AddObserver(vtk.vtkCommand.WarningEvent, onWarning),
        ]
        return self

    def __exit__(self, *exc):
        window = vtk.vtkOutputWindow.GetInstance()
        for tag in self._tags:
            window.RemoveObserver(tag)
        self._tags = []
        window.SetDisplayMode(self._savedDisplayMode)
        vtk.vtkLogger.SetStderrVerbosity(self._savedVerbosity)
        return False

    def clear(self):
        self.errors.clear()
        self.warnings.clear()


class _Module:
    """What slicer.modules.<name> gives Qt-free code: the module logic."""

    def __init__(self, name, logic):
        self.name = name
        self._logic = logic

    def logic(self):
        return self._logic


class _App:
    """The few `slicer.app` members slicer.util's Qt-free helpers use."""

    def __init__(self, core):
        self._core = core

    def mrmlScene(self):
        return self._core.scene

    def applicationLogic(self):
        return self._core.appLogic

    def testingEnabled(self):
        return True

    def processEvents(self):
        pass


class SlicerCore:
    """A scene with the application logic and the Qt-free module logics, wired like Slicer."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.appLogic = slicer.vtkSlicerApplicationLogic()
        self.appLogic.SetMRMLScene(self.scene)
        colorLogic = self.appLogic.GetColorLogic()
        colorLogic.SetMRMLScene(self.scene)
        colorLogic.AddDefaultColorNodes()  # volumes logic gives new volumes a colour table
        # No views here: empty collections keep logics that iterate over them safe.
        self.appLogic.SetSliceLogics(vtk.vtkCollection())
        self.appLogic.SetViewLogics(vtk.vtkCollection())
        self.appLogic.SetModuleLogic("Colors", colorLogic)
        self.modules = types.SimpleNamespace(colors=_Module("Colors", colorLogic))
        self._logics = {"Colors": colorLogic}
        for attribute, name, className in MODULE_LOGICS:
            logic = getattr(slicer, className)()
            logic.SetMRMLApplicationLogic(self.appLogic)
            logic.SetMRMLScene(self.scene)  # registers node classes (and converter rules)
            self.appLogic.SetModuleLogic(name, logic)
            self._logics[name] = logic
            setattr(self.modules, attribute, _Module(name, logic))
        keepConverterRulesUnique()

    def logic(self, name):
        """Module logic by Slicer module name ("Volumes", "Segmentations", ...)."""
        return self._logics[name]

    @property
    def volumesLogic(self):
        return self._logics["Volumes"]

    @property
    def segmentationsLogic(self):
        return self._logics["Segmentations"]

    @property
    def markupsLogic(self):
        return self._logics["Markups"]

    @contextlib.contextmanager
    def installed(self):
        """Set slicer.mrmlScene, slicer.modules and slicer.app to this scene; restore after."""
        names = ("mrmlScene", "modules", "app")
        missing = object()
        saved = {name: getattr(slicer, name, missing) for name in names}
        slicer.mrmlScene = self.scene
        slicer.modules = self.modules
        slicer.app = _App(self)
        try:
            yield self
        finally:
            for name, value in saved.items():
                if value is missing:
                    delattr(slicer, name)
                else:
                    setattr(slicer, name, value)

    def close(self):
        """Remove every node. The logics stay attached and go with this object: detaching
        them first makes each node that Python still holds warn when it is freed."""
        self.scene.Clear(True)

    # -- nodes ------------------------------------------------------------------------
    def addVolume(self, arrayKji, ijkToRas, name="Volume"):
        """Scalar volume node (with display node) holding a copy of arrayKji."""
        with self.installed():
            return slicer.util.addVolumeFromArray(np.ascontiguousarray(arrayKji), toVtkMatrix(ijkToRas), name=name)

    def addRoi(self, center, size, axes=None, name="ROI"):
        """Markups ROI: centre and size in its parent frame, axes = 3x3 columns of its x, y, z."""
        roi = self.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
        if axes is not None:
            objectToNode = np.eye(4)
            objectToNode[:3, :3] = np.asarray(axes, dtype=float)
            objectToNode[:3, 3] = center
            roi.GetObjectToNodeMatrix().DeepCopy(toVtkMatrix(objectToNode))
        roi.SetCenter(*[float(v) for v in center])
        roi.SetSize(*[float(v) for v in size])
        return roi

    def addLinearTransform(self, matrix, name="Transform"):
        node = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
        node.SetMatrixTransformToParent(toVtkMatrix(matrix))
        return node

    def addSegmentation(self, name="Segmentation", referenceVolume=None):
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        if referenceVolume is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
        return node

    def addSegmentEditor(self, segmentationNode, volumeNode):
        """Qt-free Segment Editor logic on a new editor node: (logic, editor node)."""
        editorNode = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "SegmentEditor")
        editor = slicer.vtkSlicerSegmentEditorLogic()
        editor.SetMRMLScene(self.scene)
        editor.SetMRMLApplicationLogic(self.appLogic)
        editor.SetSegmentEditorNode(editorNode)
        editor.SetSegmentationNode(segmentationNode)
        editor.SetSourceVolumeNode(volumeNode)
        editor.SetMaximumNumberOfUndoStates(5)
        assert editor.UpdateAlignedSourceVolume()
        return editor, editorNode

    def segmentArray(self, segmentationNode, segmentId, referenceVolume):
        """A segment exported through Slicer's own logic onto referenceVolume's voxels (K, J, I)."""
        with self.installed():
            return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolume)


def ijkToRasFromSitk(image):
    """IJK-to-RAS 4x4 of a SimpleITK image (ITK physical space is LPS)."""
    lpsToRas = np.diag([-1.0, -1.0, 1.0])
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = lpsToRas @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = lpsToRas @ np.array(image.GetOrigin(), dtype=float)
    return matrix

