"""The Qt-side parts of the `slicer` package an effect uses, as stand-ins (installed by environment.py).

Real slicer-core parts stay real (MRML classes, logics, slicer.util's array helpers). Stand-ins:
- slicer.app (qSlicerApplication): mrmlScene, applicationLogic, layoutManager, processEvents with
  test hooks, signals (startupCompleted);
- slicer.util's GUI helpers: createProgressDialog, errorDisplay, warningDisplay, infoDisplay,
  confirmOkCancelDisplay, confirmYesNoDisplay, delayDisplay, mainWindow, tryWithErrorDisplay;
- widgets: qMRMLNodeComboBox, qSlicerMarkupsPlaceWidget, qMRMLSpinBox, qMRMLSegmentSelectorWidget...;
- slicer.qSlicerSegmentEditorAbstractEffect (enums), slicer.qSlicerSegmentEditorEffectFactory;
- the SegmentEditorEffects package's AbstractScriptedSegmentEditorEffect;
- slicer.ScriptedLoadableModule's base classes; slicer.i18n.
"""

import contextlib
import logging
import unittest

from . import qtstubs, scriptedeffect, threadcheck
from .qtstubs import QObject, QToolButton, QWidget

_log = logging.getLogger("slicer_harness")


class App(QObject):
    """qSlicerApplication stand-in. processEvents() is the tests' hook into a running effect."""

    SIGNALS = ("startupCompleted", "aboutToQuit")

    def __init__(self, environment):
        super().__init__()
        self._environment = environment

    def mrmlScene(self):
        return self._environment.core.scene

    def applicationLogic(self):
        return self._environment.core.appLogic

    def layoutManager(self):
        return self._environment.layoutManager

    def testingEnabled(self):
        return False

    def processEvents(self, *args):
        threadcheck.check("slicer.app.processEvents")
        self._environment.processEvents()

    def settings(self):
        return qtstubs.QSettings()


class ProgressDialog(QWidget):
    """ctkProgressDialog from slicer.util.createProgressDialog; tests may cancel it."""

    SIGNALS = ("canceled",)
    DEFAULTS = {"value": 0, "maximum": 100, "minimum": 0, "labelText": "", "windowTitle": "", "wasCanceled": False,
                "closed": False}

    def cancel(self):
        self._properties["wasCanceled"] = True
        self.emit("canceled")

    def close(self):
        self._properties["closed"] = True
        self.visible = False


class NodeComboBox(QWidget):
    """qMRMLNodeComboBox: a current node and currentNodeChanged / currentNodeIDChanged."""

    SIGNALS = ("currentNodeChanged", "currentNodeIDChanged", "nodeAdded", "nodeAboutToBeRemoved",
               "nodeActivated", "nodeAddedByUser")
    DEFAULTS = {"nodeTypes": [], "noneEnabled": False, "addEnabled": True, "removeEnabled": True,
                "renameEnabled": False, "editEnabled": False, "selectNodeUponCreation": True, "showHidden": False,
                "showChildNodeTypes": True, "baseName": "", "noneDisplay": "None"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._properties["scene"] = None
        self._properties["node"] = None

    def setMRMLScene(self, scene):
        self._properties["scene"] = scene

    def mrmlScene(self):
        return self._properties["scene"]

    def currentNode(self):
        node = self._properties["node"]
        # The combo box drops a node removed from its scene.
        return node if node is not None and node.GetScene() is not None else None

    def currentNodeID(self):
        node = self.currentNode()
        return node.GetID() if node is not None else ""

    def setCurrentNode(self, node):
        if node is self.currentNode():
            return
        self._properties["node"] = node
        self.emit("currentNodeChanged", node)
        self.emit("currentNodeIDChanged", node.GetID() if node is not None else "")

    def setCurrentNodeID(self, nodeId):
        scene = self._properties["scene"]
        self.setCurrentNode(scene.GetNodeByID(nodeId) if scene is not None and nodeId else None)

    def addAttribute(self, *args):
        pass


class CheckableNodeComboBox(NodeComboBox):
    """qMRMLCheckableNodeComboBox: nodes of its types in the scene, each checked or not."""

    SIGNALS = ("checkedNodesChanged",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._properties["checked"] = []

    def setCheckState(self, node, state):
        checked = self._properties["checked"]
        if state and node not in checked:
            checked.append(node)
        elif not state and node in checked:
            checked.remove(node)
        self.emit("checkedNodesChanged")

    def checkedNodes(self):
        return [node for node in self._properties["checked"] if node.GetScene() is not None]


class MarkupsPlaceWidget(NodeComboBox):
    """qSlicerMarkupsPlaceWidget: a current markups node (as a node combo box), place mode, buttons."""

    ForcePlaceSingleMarkup, ForcePlaceMultipleMarkups = 0, 1
    HidePlaceMultipleMarkupsOption, ShowPlaceMultipleMarkupsOption = 2, 3
    SIGNALS = ("activeMarkupsPlaceModeChanged",)
    DEFAULTS = {"placeMultipleMarkups": 0, "buttonsVisible": True, "placeModeEnabled": False,
                "deleteAllControlPointsOptionVisible": True}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._placeButton = QToolButton()
        self._placeButton.checkable = True

    def placeButton(self):
        return self._placeButton

    def deleteButton(self):
        return QToolButton()


class AbstractEffectEnums:
    """slicer.qSlicerSegmentEditorAbstractEffect as Python sees it: the enums."""

    ModificationModeSet = scriptedeffect.ModificationModeSet
    ModificationModeAdd = scriptedeffect.ModificationModeAdd
    ModificationModeRemove = scriptedeffect.ModificationModeRemove
    ModificationModeRemoveAll = scriptedeffect.ModificationModeRemoveAll
    NotConfirmed = scriptedeffect.NotConfirmed
    ConfirmedWithoutDialog = scriptedeffect.ConfirmedWithoutDialog
    ConfirmedWithDialog = scriptedeffect.ConfirmedWithDialog


class EffectFactory:
    """qSlicerSegmentEditorEffectFactory (EditorEffects/qSlicerSegmentEditorEffectFactory.cxx)."""

    _instance = None

    def __init__(self):
        self.registered = []

    @classmethod
    def instance(cls):
        if cls._instance is None:
            cls._instance = EffectFactory()
        return cls._instance

    def registerEffect(self, effect):
        """registerEffect: refuse no effect, an empty name, or a name already registered."""
        if effect is None or not effect.name:
            return False
        if any(e.name == effect.name for e in self.registered):
            return False
        self.registered.append(effect)
        return True

    def registeredEffects(self):
        return list(self.registered)

    def copyEffects(self, effects):
        """copyEffects: clone each registered effect not yet in `effects` (by name), append it."""
        copied = []
        for effect in self.registered:
            if any(e.name == effect.name for e in effects):
                continue
            clone = effect.clone()
            if clone is None:
                continue
            effects.append(clone)
            copied.append(clone)
        return copied


class AbstractScriptedSegmentEditorEffect:
    """Stand-in for SegmentEditorEffects.AbstractScriptedSegmentEditorEffect (Slicer's Python base
    class, Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/): it keeps the
    scripted effect, registers it with the factory, and converts coordinates through the scripted
    effect with qt.QPoint / qt.QVector3D (so an XY is truncated to integers, as in Slicer)."""

    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect

    def register(self):
        EffectFactory.instance().registerEffect(self.scriptedEffect)

    def cleanup(self):
        pass

    def rasToXy(self, ras, viewWidget):
        point = self.scriptedEffect.rasToXy(qtstubs.QVector3D(*ras[:3]), viewWidget)
        return [point.x(), point.y()]

    def xyzToRas(self, xyz, viewWidget):
        ras = self.scriptedEffect.xyzToRas(qtstubs.QVector3D(*xyz[:3]), viewWidget)
        return [ras.x(), ras.y(), ras.z()]

    def xyToRas(self, xy, viewWidget):
        ras = self.scriptedEffect.xyToRas(qtstubs.QPoint(xy[0], xy[1]), viewWidget)
        return [ras.x(), ras.y(), ras.z()]

    def xyzToIjk(self, xyz, viewWidget, image, parentTransformNode=None):
        ijk = self.scriptedEffect.xyzToIjk(qtstubs.QVector3D(*xyz[:3]), viewWidget, image, parentTransformNode)
        return [int(ijk.x()), int(ijk.y()), int(ijk.z())]

    def xyToIjk(self, xy, viewWidget, image, parentTransformNode=None):
        ijk = self.scriptedEffect.xyToIjk(qtstubs.QPoint(xy[0], xy[1]), viewWidget, image, parentTransformNode)
        return [int(ijk.x()), int(ijk.y()), int(ijk.z())]

    def setWidgetMinMaxStepFromImageSpacing(self, spinbox, imageData):
        pass


# -- slicer.ScriptedLoadableModule ------------------------------------------------------------------
class ModuleParent(QObject):
    """The qSlicerScriptedLoadableModule a scripted module's __init__ fills in."""

    DEFAULTS = {"title": "", "categories": [], "dependencies": [], "contributors": [], "helpText": "",
                "acknowledgementText": "", "hidden": False}


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent

    def getDefaultModuleDocumentationLink(self, *args, **kwargs):
        return ""


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent
        self.layout = qtstubs.QVBoxLayout()

    def setup(self):
        pass

    def cleanup(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        pass


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, *args):
        _log.info(message)


# -- slicer.util GUI helpers ------------------------------------------------------------------------
class DialogRecorder:
    """What slicer.util's message boxes and progress dialogs would have shown."""

    def __init__(self):
        self.errors = []
        self.warnings = []
        self.infos = []
        self.progressDialogs = []
        self.confirmReply = False  # never consent to installs or downloads in tests

    def createProgressDialog(self, parent=None, value=0, maximum=100, labelText="", windowTitle="", **kwargs):
        threadcheck.check("slicer.util.createProgressDialog")
        dialog = ProgressDialog()
        dialog.value, dialog.maximum, dialog.labelText, dialog.windowTitle = value, maximum, labelText, windowTitle
        self.progressDialogs.append(dialog)
        return dialog

    def errorDisplay(self, text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        threadcheck.check("slicer.util.errorDisplay")
        self.errors.append(str(text))
        _log.info("errorDisplay: %s", text)

    def warningDisplay(self, text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        threadcheck.check("slicer.util.warningDisplay")
        self.warnings.append(str(text))

    def infoDisplay(self, text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        threadcheck.check("slicer.util.infoDisplay")
        self.infos.append(str(text))

    def confirm(self, text, windowTitle=None, parent=None, **kwargs):
        threadcheck.check("slicer.util.confirm")
        self.infos.append(str(text))
        return self.confirmReply

    @contextlib.contextmanager
    def tryWithErrorDisplay(self, message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as exc:
            if show:
                self.errors.append(f"{message or ''} {exc}".strip())
            raise

    def utilFunctions(self):
        return {
            "createProgressDialog": self.createProgressDialog,
            "errorDisplay": self.errorDisplay,
            "warningDisplay": self.warningDisplay,
            "infoDisplay": self.infoDisplay,
            "confirmOkCancelDisplay": self.confirm,
            "confirmYesNoDisplay": self.confirm,
            "delayDisplay": lambda message, *args, **kwargs: _log.info(message),
            "mainWindow": lambda *args, **kwargs: None,
            "tryWithErrorDisplay": self.tryWithErrorDisplay,
            "showStatusMessage": lambda *args, **kwargs: None,
        }


def widgetClasses():
    """The `slicer.q...` widget classes an effect may build."""
    generic = ("qMRMLSegmentSelectorWidget", "qMRMLSliderWidget", "qMRMLRangeWidget", "qSlicerWidget")
    classes = {name: type(name, (QWidget,), {}) for name in generic}
    classes.update({
        "qMRMLNodeComboBox": NodeComboBox,
        "qMRMLCheckableNodeComboBox": CheckableNodeComboBox,
        "qSlicerMarkupsPlaceWidget": MarkupsPlaceWidget,
        "qMRMLSpinBox": type("qMRMLSpinBox", (qtstubs.QDoubleSpinBox,),
                             {"MinimumValue": 1, "MaximumValue": 2, "Precision": 4}),
        "qSlicerSegmentEditorAbstractEffect": AbstractEffectEnums,
        "qSlicerSegmentEditorEffectFactory": EffectFactory,
        "qSlicerSegmentEditorScriptedEffect": scriptedeffect.ScriptedEffect,
    })
    return classes
