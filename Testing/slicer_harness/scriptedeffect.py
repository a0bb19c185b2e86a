"""Stand-in for Slicer's qSlicerSegmentEditorScriptedEffect and its C++ base, on real MRML.

Every method follows the Slicer 5.10.0 source named in its docstring (same behaviour in 5.12.3
unless said otherwise), all under Modules/Loadable/Segmentations/EditorEffects/:
- qSlicerSegmentEditorScriptedEffect.cxx (SE below): loading the Python class, which Python
  methods are called when, and what happens when they are missing or raise;
- qSlicerSegmentEditorAbstractEffect.cxx (AE below): parameters, node references, labelmap
  modification, undo, volumes, views and coordinates.
Parameters and node references live on a real vtkMRMLSegmentEditorNode; labelmaps go through a
real vtkSlicerSegmentEditorLogic (slicer-core), the logic the 5.10 C++ calls.

Differences from the application are listed in `NOT_REPRODUCED` (the report quotes it).
"""

import logging
import re
import traceback

import slicer
import vtk

from . import loading, threadcheck
from .qtstubs import QFormLayout, QFrame, QLabel, QPoint, QVector3D

# qSlicerSegmentEditorAbstractEffect.h enums (ModificationMode, ConfirmationResult).
ModificationModeSet, ModificationModeAdd, ModificationModeRemove, ModificationModeRemoveAll = range(4)
NotConfirmed, ConfirmedWithoutDialog, ConfirmedWithDialog = range(3)

# SE qSlicerSegmentEditorScriptedEffectPrivate constructor: the Python methods Slicer looks up.
PYTHON_API = ("icon", "helpText", "clone", "activate", "deactivate", "setupOptionsFrame", "createCursor",
              "processInteractionEvents", "processViewNodeEvents", "setMRMLDefaults", "referenceGeometryChanged",
              "sourceVolumeNodeChanged", "masterVolumeNodeChanged", "layoutChanged", "interactionNodeModified",
              "updateGUIFromMRML", "updateMRMLFromGUI", "cleanup")

NOT_REPRODUCED = (
    "Qt widgets, cursors and rendering: stubs record values, no pixels are drawn.",
    "PythonQt's overload resolution and type conversion (only the conversions listed in qtstubs).",
    "The Qt event loop: processEvents runs test hooks and stub timers, not real window events.",
    "How a Python worker thread interleaves with Slicer's event loop and the GIL held by VTK wrappers.",
    "confirmCurrentSegmentVisible's dialog (answered by a preset reply).",
    "3D views, the crosshair touch-gesture filter in qMRMLSegmentEditorWidget::processEvents.",
)

_MISSING = object()
# AE modifySegmentByLabelmap static_casts its ModificationMode to the logic's (same order).
_LOGIC_MODES = tuple(getattr(slicer.vtkSlicerSegmentEditorLogic, name) for name in (
    "ModificationModeSet", "ModificationModeAdd", "ModificationModeRemove", "ModificationModeRemoveAll"))
_log = logging.getLogger("slicer_harness")


class ScriptedEffect:
    """qSlicerSegmentEditorScriptedEffect stand-in (what an effect sees as `self.scriptedEffect`)."""

    def __init__(self, parent=None):
        # AE constructor and header defaults; SE constructor sets the name.
        self.name = "UnnamedScriptedEffect"
        self.title = ""
        self.perSegment = True
        self.requireSegments = True
        self.showEffectCursorInSliceView = True
        self.showEffectCursorInThreeDView = False
        self._active = False
        self._parameterSetNode = None
        self._logic = None
        self._editor = None  # the widget behind setCallbackSlots
        self._pythonSelf = None
        self._methods = {}
        self._source = ""
        self._savedCursor = "arrow"
        self._optionsFrame = QFrame()
        self._optionsFrame.setLayout(QFormLayout())
        self._optionsFrame.visible = False
        self.criticals = []  # qCritical / qWarning messages
        self.pythonErrors = []  # tracebacks PythonQt::handleError would print

    # -- loading (SE setPythonSource; Base/QTCore/qSlicerScriptedUtils.cxx) ----------------------------
    def setPythonSource(self, path):
        """SE setPythonSource: module name = parent folder's name, class name = file base name
        (+ "Effect"); reuse sys.modules[name].<class> if present, else loadSourceAsModule; instantiate
        with this object; bind the PYTHON_API methods once (qSlicerPythonCppAPI::instantiateClass);
        set slicer.<moduleName> to the Python object (qSlicerScriptedUtils::setModuleAttribute)."""
        if not (path.endswith(".py") or path.endswith(".pyc")):
            return False
        moduleName, className = loading.moduleAndClassName(path)
        try:
            klass = loading.classFromSysModules(moduleName, className)
            if klass is None:
                module = loading.loadSourceAsModule(moduleName, path)
                klass = getattr(module, className, None)
            if klass is None:
                raise RuntimeError(f"qSlicerSegmentEditorScriptedEffect::setPythonSource - Failed to load segment "
                                   f"editor scripted effect: class {className} was not found in {path}")
            pythonSelf = klass(self)
        except Exception:
            self._handleError()
            return False
        self._methods = {name: getattr(pythonSelf, name) for name in PYTHON_API if hasattr(pythonSelf, name)}
        self._pythonSelf = pythonSelf
        self._source = path
        setattr(slicer, moduleName, pythonSelf)
        return True

    def pythonSource(self):
        return self._source

    def self(self):
        return self._pythonSelf

    def _handleError(self):
        text = traceback.format_exc()
        self.pythonErrors.append(text)
        _log.error("Python error in scripted effect %s:\n%s", self.name, text)

    def _callPython(self, method, *args):
        """qSlicerPythonCppAPI::callMethod: _MISSING when the method is absent or raised (printed)."""
        bound = self._methods.get(method)
        if bound is None:
            return _MISSING
        try:
            return bound(*args)
        except Exception:
            self._handleError()
            return _MISSING

    def _critical(self, text):
        self.criticals.append(text)
        _log.debug(text)

    # -- Python API calls (SE) --------------------------------------------------------------------------
    def icon(self):
        result = self._callPython("icon")
        return None if result is _MISSING else result

    def helpText(self):
        result = self._callPython("helpText")
        if result is _MISSING:
            return ""
        if not isinstance(result, str):
            self._critical("Function 'helpText' is expected to return a string!")
            return ""
        return result

    def clone(self):
        """SE clone: the Python clone() is mandatory and must return a scripted effect."""
        result = self._callPython("clone")
        if result is _MISSING or not isinstance(result, ScriptedEffect):
            self._critical(f"{self._source}: clone: Failed to call mandatory clone method or invalid result")
            return None
        return result

    def activate(self):
        """AE activate (show options, active, updateGUIFromMRML), then the Python activate (SE)."""
        self._optionsFrame.visible = True
        self._active = True
        self.updateGUIFromMRML()
        self._callPython("activate")

    def deactivate(self):
        """AE deactivate (hide options, inactive), then the Python deactivate (SE)."""
        self._optionsFrame.visible = False
        self._active = False
        self._callPython("deactivate")

    def active(self):
        return self._active

    def setupOptionsFrame(self):
        self._callPython("setupOptionsFrame")

    def createCursor(self, viewWidget):
        result = self._callPython("createCursor", viewWidget)
        return "effect cursor" if result is _MISSING else result

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        """SE processInteractionEvents: a missing or failing method means False (superclass); a
        non-bool result is warned about and counts as False."""
        result = self._callPython("processInteractionEvents", callerInteractor, eventId, viewWidget)
        if result is _MISSING:
            return False
        if not isinstance(result, bool):
            self._critical("function 'processInteractionEvents' is expected to return a boolean")
            return False
        return result

    def processViewNodeEvents(self, callerViewNode, eventId, viewWidget):
        self._callPython("processViewNodeEvents", callerViewNode, eventId, viewWidget)

    def setMRMLDefaults(self):
        self._callPython("setMRMLDefaults")

    def referenceGeometryChanged(self):
        self._callPython("referenceGeometryChanged")

    def sourceVolumeNodeChanged(self):
        self._callPython("sourceVolumeNodeChanged")

    def masterVolumeNodeChanged(self):
        self._callPython("masterVolumeNodeChanged")

    def layoutChanged(self):
        self._callPython("layoutChanged")

    def interactionNodeModified(self, interactionNode):
        """SE: the Python method if any, else AE interactionNodeModified (leave the effect when the
        user starts placing markups)."""
        if self._callPython("interactionNodeModified", interactionNode) is not _MISSING:
            return
        if interactionNode is not None and interactionNode.GetCurrentInteractionMode() != interactionNode.ViewTransform:
            self.selectEffect("")

    def updateGUIFromMRML(self):
        """SE updateGUIFromMRML: only while the effect is active."""
        if self._active:
            self._callPython("updateGUIFromMRML")

    def updateMRMLFromGUI(self):
        self._callPython("updateMRMLFromGUI")

    def cleanup(self):
        self._callPython("cleanup")

    # -- editor wiring (AE setCallbackSlots, setSegmentEditorLogic, setParameterSetNode) ----------------
    def setCallbackSlots(self, editorWidget):
        self._editor = editorWidget

    def setSegmentEditorLogic(self, logic):
        self._logic = logic

    def parameterSetNode(self):
        return self._parameterSetNode

    def setParameterSetNode(self, node):
        self._parameterSetNode = node

    def scene(self):
        return self._parameterSetNode.GetScene() if self._parameterSetNode is not None else None

    # -- parameters (AE parameter ... setCommonNodeReference) ------------------------------------------
    def _attributeName(self, name):
        return f"{self.name}.{name}"

    def parameter(self, name):
        """AE parameter: "<effect>.<name>" first, then the common "<name>"; missing -> "" and qCritical."""
        threadcheck.check("scriptedEffect.parameter")
        node = self._parameterSetNode
        if node is None:
            return ""
        value = node.GetAttribute(self._attributeName(name))
        if value is None:
            value = node.GetAttribute(name)
        if value is None:
            self._critical(f"Parameter named {name} cannot be found for effect {self.name}")
            return ""
        return value

    def integerParameter(self, name):
        """AE integerParameter: QString::toInt; not an integer -> 0 and qCritical."""
        if self._parameterSetNode is None:
            return 0
        text = self.parameter(name)
        if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
            self._critical(f"Parameter named {name} cannot be converted to integer!")
            return 0
        return int(text)

    def doubleParameter(self, name):
        """AE doubleParameter: QString::toDouble; not a number -> 0.0 and qCritical."""
        if self._parameterSetNode is None:
            return 0.0
        text = self.parameter(name)
        try:
            if "_" in text:
                raise ValueError(text)
            return float(text)
        except ValueError:
            self._critical(f"Parameter named {name} cannot be converted to floating point number!")
            return 0.0

    def nodeReference(self, name):
        """AE nodeReference: "<effect>.<name>" reference first, then the common one."""
        threadcheck.check("scriptedEffect.nodeReference")
        node = self._parameterSetNode
        if node is None:
            return None
        return node.GetNodeReference(self._attributeName(name)) or node.GetNodeReference(name)

    @staticmethod
    def _text(value):
        """The QString an overload of setParameter receives: int -> QString::number(int),
        double -> QString::number(double) ('g', 6 digits), None -> empty."""
        if value is None:
            return ""
        if isinstance(value, bool):
            return str(int(value))
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value)

    def _hasParameterSetNode(self):
        if self._parameterSetNode is None:
            self._critical(f"Invalid segment editor parameter set node set to effect {self.name}")
        return self._parameterSetNode is not None

    def setParameter(self, name, value):
        """AE setParameter -> setCommonParameter("<effect>.<name>", value)."""
        if self._hasParameterSetNode():
            self.setCommonParameter(self._attributeName(name), value)

    def setCommonParameter(self, name, value):
        """AE setCommonParameter: no change -> nothing; else the attribute is set with full Modified
        events disabled and EffectParameterModified is invoked."""
        threadcheck.check("scriptedEffect.setCommonParameter")
        if not self._hasParameterSetNode():
            return
        node = self._parameterSetNode
        value = self._text(value)
        old = node.GetAttribute(name)
        if (old is None and value == "") or value == old:
            return
        disabled = node.GetDisableModifiedEvent()
        node.SetDisableModifiedEvent(1)
        node.SetAttribute(name, value)
        node.SetDisableModifiedEvent(disabled)
        node.InvokeCustomModifiedEvent(slicer.vtkMRMLSegmentEditorNode.EffectParameterModified)

    def parameterDefined(self, name):
        """AE parameterDefined: the "<effect>.<name>" attribute exists and is not empty."""
        return self.commonParameterDefined(self._attributeName(name))

    def commonParameterDefined(self, name):
        node = self._parameterSetNode
        return node is not None and bool(node.GetAttribute(name))

    def setParameterDefault(self, name, value):
        """AE setParameterDefault: only when not defined (an empty value counts as undefined)."""
        if not self.parameterDefined(name):
            self.setParameter(name, value)

    def setCommonParameterDefault(self, name, value):
        if not self.commonParameterDefined(name):
            self.setCommonParameter(name, value)

    def setNodeReference(self, name, node):
        """AE setNodeReference -> setCommonNodeReference("<effect>.<name>", node)."""
        if self._hasParameterSetNode():
            self.setCommonNodeReference(self._attributeName(name), node)

    def setCommonNodeReference(self, name, node):
        """AE setCommonNodeReference: no change -> nothing; else SetNodeReferenceID and
        EffectParameterModified."""
        threadcheck.check("scriptedEffect.setCommonNodeReference")
        editorNode = self._parameterSetNode
        if editorNode is None:
            return
        if node is editorNode.GetNodeReference(name) or (node is None and editorNode.GetNodeReference(name) is None):
            return
        editorNode.SetNodeReferenceID(name, node.GetID() if node is not None else None)
        editorNode.InvokeCustomModifiedEvent(slicer.vtkMRMLSegmentEditorNode.EffectParameterModified)

    # -- labelmaps and undo (AE) ------------------------------------------------------------------------
    def modifySelectedSegmentByLabelmap(self, modifierLabelmap, modificationMode, *rest):
        """AE modifySelectedSegmentByLabelmap, all three overloads: (labelmap, mode[, bypassMasking])
        and (labelmap, mode, extent[6][, bypassMasking]) -> modifySegmentByLabelmap on the editor
        node's segmentation and selected segment ("" when none)."""
        extent, bypassMasking = self._extentAndBypass(rest)
        node = self._parameterSetNode
        self._modify(node.GetSegmentationNode(), node.GetSelectedSegmentID() or "", modifierLabelmap,
                     modificationMode, extent, bypassMasking)

    def modifySegmentByLabelmap(self, segmentationNode, segmentId, modifierLabelmap, modificationMode, *rest):
        extent, bypassMasking = self._extentAndBypass(rest)
        self._modify(segmentationNode, segmentId, modifierLabelmap, modificationMode, extent, bypassMasking)

    def _extentAndBypass(self, rest):
        if rest and isinstance(rest[0], (list, tuple)):
            if len(rest[0]) != 6:
                self._critical("modifySelectedSegmentByLabelmap failed: extent must have 6 int values")
                raise ValueError("extent must have 6 int values")
            return [int(v) for v in rest[0]], bool(rest[1]) if len(rest) > 1 else False
        return [0, -1, 0, -1, 0, -1], bool(rest[0]) if rest else False

    def _modify(self, segmentationNode, segmentId, labelmap, mode, extent, bypassMasking):
        """AE modifySegmentByLabelmap: vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap with
        perSegment() and bypassMasking; nothing without a logic."""
        threadcheck.check("scriptedEffect._modify")
        if self._logic is None:
            return
        self._logic.ModifySegmentByLabelmap(segmentationNode, segmentId, labelmap,
                                            _LOGIC_MODES[int(mode)], extent,
                                            bool(self.perSegment), bypassMasking)

    def saveStateForUndo(self):
        """AE saveStateForUndo emits saveStateForUndoSignal -> qMRMLSegmentEditorWidget::saveStateForUndo."""
        threadcheck.check("scriptedEffect.saveStateForUndo")
        if self._editor is not None:
            self._editor.saveStateForUndo()

    def _updatedVolume(self, which):
        """AE sourceVolumeImageData & co.: updateVolumeSignal -> qMRMLSegmentEditorWidget::updateVolume
        -> vtkSlicerSegmentEditorLogic::UpdateVolume; None when the update failed."""
        threadcheck.check("scriptedEffect._updatedVolume")
        if self._editor is None:
            return None
        return self._editor.updateVolume(which)

    def sourceVolumeImageData(self):
        return self._updatedVolume("alignedSource")

    def masterVolumeImageData(self):
        self._critical("qSlicerSegmentEditorAbstractEffect::masterVolumeImageData() method is deprecated")
        return self.sourceVolumeImageData()

    def defaultModifierLabelmap(self):
        return self._updatedVolume("modifier")

    def modifierLabelmap(self):
        return self._logic.GetModifierLabelmap() if self._logic is not None else None

    def maskLabelmap(self):
        return self._updatedVolume("mask")

    def selectedSegmentLabelmap(self):
        return self._updatedVolume("selectedSegment")

    def referenceGeometryImage(self):
        return self._updatedVolume("referenceGeometry")

    def selectEffect(self, effectName):
        """AE selectEffect emits selectEffectSignal -> qMRMLSegmentEditorWidget::setActiveEffectByName."""
        threadcheck.check("scriptedEffect.selectEffect")
        if self._editor is not None:
            self._editor.setActiveEffectByName(effectName)

    def confirmCurrentSegmentVisible(self):
        """AE confirmCurrentSegmentVisible without the dialog: visible segment -> no dialog needed;
        otherwise the editor widget's preset reply (ConfirmedWithoutDialog by default)."""
        node = self._parameterSetNode
        segmentationNode = node.GetSegmentationNode() if node else None
        segmentId = node.GetSelectedSegmentID() if node else None
        if segmentationNode is None or not segmentId:
            return ConfirmedWithoutDialog
        for i in range(segmentationNode.GetNumberOfDisplayNodes()):
            display = segmentationNode.GetNthDisplayNode(i)
            if display and display.GetVisibility() and display.GetSegmentVisibility(segmentId):
                return ConfirmedWithoutDialog
        return getattr(self._editor, "confirmSegmentVisibleReply", ConfirmedWithoutDialog)

    # -- options frame (AE optionsFrame ... addLabeledOptionsWidget) -----------------------------------
    def optionsFrame(self):
        return self._optionsFrame

    def optionsLayout(self):
        return self._optionsFrame.layout()

    def addOptionsWidget(self, widgetOrLayout):
        if hasattr(widgetOrLayout, "setParent"):
            widgetOrLayout.setParent(self._optionsFrame)
        self.optionsLayout().addRow(widgetOrLayout)

    def addLabeledOptionsWidget(self, label, widgetOrLayout):
        labelWidget = QLabel(label)
        if hasattr(widgetOrLayout, "setParent"):
            widgetOrLayout.setParent(self._optionsFrame)
        self.optionsLayout().addRow(labelWidget, widgetOrLayout)
        return labelWidget

    # -- views (AE renderWindow ... sliceSpacing) -------------------------------------------------------
    def _sliceView(self, viewWidget):
        if viewWidget is None or viewWidget.className() != "qMRMLSliceWidget":
            self._critical("Unsupported view widget type!")
            return None
        return viewWidget.sliceView()

    def renderer(self, viewWidget):
        view = self._sliceView(viewWidget)
        return view.renderer() if view is not None else None

    def viewNode(self, viewWidget):
        return viewWidget.sliceLogic().GetSliceNode() if viewWidget is not None else None

    def sliceNode(self, viewWidget):
        return viewWidget.sliceLogic().GetSliceNode() if viewWidget is not None else None

    def _changeProps(self, what, viewWidget, actor):
        threadcheck.check("scriptedEffect._changeProps")
        renderer = self.renderer(viewWidget)
        if renderer is None:
            self._critical(f"{what}: Failed to get renderer for view widget")
            return
        (renderer.AddViewProp if what.startswith("add") else renderer.RemoveViewProp)(actor)
        self.scheduleRender(viewWidget)

    def addActor2D(self, viewWidget, actor):
        """AE addActor2D: renderer->AddActor2D (5.12: AddViewProp, same effect) and scheduleRender."""
        self._changeProps("addActor2D", viewWidget, actor)

    def removeActor2D(self, viewWidget, actor):
        """AE removeActor2D: renderer->RemoveActor2D (5.12: RemoveViewProp) and scheduleRender."""
        self._changeProps("removeActor2D", viewWidget, actor)

    addActor3D, removeActor3D = addActor2D, removeActor2D

    def cursorOff(self, viewWidget):
        """AE cursorOff: remember the view's cursor, show a blank one."""
        threadcheck.check("scriptedEffect.cursorOff")
        view = self._sliceView(viewWidget)
        if view is not None:
            self._savedCursor = view.cursor
            view.setDefaultViewCursor("blank")

    def cursorOn(self, viewWidget):
        threadcheck.check("scriptedEffect.cursorOn")
        view = self._sliceView(viewWidget)
        if view is not None:
            view.setDefaultViewCursor(self._savedCursor)

    def scheduleRender(self, viewWidget):
        threadcheck.check("scriptedEffect.scheduleRender")
        view = self._sliceView(viewWidget)
        if view is not None:
            view.scheduleRender()

    def forceRender(self, viewWidget):
        view = self._sliceView(viewWidget)
        if view is not None:
            view.forceRender()

    def sliceSpacing(self, sliceWidget):
        sliceLogic = sliceWidget.sliceLogic()
        return slicer.vtkSlicerSegmentEditorLogic.GetSliceSpacing(sliceLogic.GetSliceNode(), sliceLogic)

    # -- coordinates (AE rasToXy ... xyToIjk; vtkSlicerSegmentEditorLogic's static helpers) ------------
    @staticmethod
    def _triple(value):
        return [value.x(), value.y(), value.z()] if isinstance(value, QVector3D) else [float(v) for v in value]

    def rasToXy(self, ras, sliceWidget):
        """vtkSlicerSegmentEditorLogic::RasToXy: inverse XYToRAS, truncated to int (static_cast)."""
        xyToRas = vtk.vtkMatrix4x4()
        xyToRas.DeepCopy(self.sliceNode(sliceWidget).GetXYToRAS())
        xyToRas.Invert()
        xyzw = xyToRas.MultiplyPoint([*self._triple(ras), 1.0])
        return QPoint(int(xyzw[0]), int(xyzw[1]))

    def xyzToRas(self, xyz, sliceWidget):
        ras = [0.0, 0.0, 0.0]
        slicer.vtkSlicerSegmentEditorLogic.XyzToRas(self._triple(xyz), ras, self.sliceNode(sliceWidget))
        return QVector3D(*ras)

    def xyToRas(self, xy, sliceWidget):
        x, y = (xy.x(), xy.y()) if isinstance(xy, QPoint) else (float(xy[0]), float(xy[1]))
        return self.xyzToRas([x, y, 0.0], sliceWidget)

    def xyzToIjk(self, xyz, sliceWidget, image, parentTransformNode=None):
        ijk = [0, 0, 0]
        slicer.vtkSlicerSegmentEditorLogic.XyzToIjk(self._triple(xyz), ijk, self.sliceNode(sliceWidget), image,
                                                    parentTransformNode)
        return QVector3D(*ijk)

    def xyToIjk(self, xy, sliceWidget, image, parentTransformNode=None):
        x, y = (xy.x(), xy.y()) if isinstance(xy, QPoint) else (float(xy[0]), float(xy[1]))
        return self.xyzToIjk([x, y, 0.0], sliceWidget, image, parentTransformNode)
