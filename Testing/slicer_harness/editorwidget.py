"""Stand-in for qMRMLSegmentEditorWidget: how the Segment Editor creates, activates and drives effects.

Follows Slicer 5.10.0 Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.cxx; the
editing itself is the real vtkSlicerSegmentEditorLogic of slicer-core (the widget delegates to it in
5.10: saveStateForUndo, updateVolume, undo, redo).
"""

import slicer
import vtk

from . import threadcheck
from .scriptedeffect import ConfirmedWithoutDialog

# qMRMLSegmentEditorWidget::setupViewObservations: the slice-view interactor events forwarded to
# the active effect.
INTERACTOR_EVENTS = (
    "LeftButtonPressEvent", "LeftButtonReleaseEvent", "LeftButtonDoubleClickEvent", "RightButtonPressEvent",
    "RightButtonReleaseEvent", "RightButtonDoubleClickEvent", "MiddleButtonPressEvent", "MiddleButtonReleaseEvent",
    "MiddleButtonDoubleClickEvent", "MouseMoveEvent", "MouseWheelForwardEvent", "MouseWheelBackwardEvent",
    "MouseWheelLeftEvent", "MouseWheelRightEvent", "KeyPressEvent", "KeyReleaseEvent", "EnterEvent", "LeaveEvent",
)


class SegmentEditorWidget:
    def __init__(self, environment, maximumNumberOfUndoStates=10):
        self.environment = environment
        scene = environment.core.scene
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(scene)
        self.logic.SetMRMLApplicationLogic(environment.core.appLogic)
        self.logic.SetMaximumNumberOfUndoStates(maximumNumberOfUndoStates)
        self.effects = []  # this widget's clones (updateEffectList)
        self.activeEffect = None
        self.parameterSetNode = None
        self.confirmSegmentVisibleReply = ConfirmedWithoutDialog
        self.handledEvents = []  # (view name, event name, handled by the effect)
        self._nodeObservations = []
        self._viewObservations = []

    # -- set-up ------------------------------------------------------------------------------------------
    def setMRMLSegmentEditorNode(self, node):
        """setMRMLSegmentEditorNode + initializeParameterSetNode: the logic gets the node, each effect
        gets it and its defaults (updateEffectList), and the node's events are observed."""
        self._removeNodeObservations()
        self.parameterSetNode = node
        self.logic.SetSegmentEditorNode(node)
        if node is not None:
            # initializeParameterSetNode: under a MRMLNodeModifyBlocker (events compressed until the end).
            wasModifying = node.StartModify()
            for effect in self.effects:
                self._connectEffectToNode(effect)
            node.EndModify(wasModifying)
            # updateWidgetFromMRML on node Modified -> updateEffectsSectionFromMRML.
            tag = node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *args: self.updateEffectsSectionFromMRML())
            self._nodeObservations.append((node, tag))

    def _connectEffectToNode(self, effect):
        effect.setParameterSetNode(self.parameterSetNode)
        if self.parameterSetNode is None:
            return
        effect.setMRMLDefaults()
        # qvtkReconnect(ParameterSetNode, EffectParameterModified, effect, SLOT(updateGUIFromMRML())).
        tag = self.parameterSetNode.AddObserver(slicer.vtkMRMLSegmentEditorNode.EffectParameterModified,
                                                lambda *args, effect=effect: effect.updateGUIFromMRML())
        self._nodeObservations.append((self.parameterSetNode, tag))

    def _removeNodeObservations(self):
        for node, tag in self._nodeObservations:
            node.RemoveObserver(tag)
        self._nodeObservations = []

    def updateEffectList(self):
        """updateEffectList: clone the factory's effects; connect callbacks, logic, parameter node
        (setMRMLDefaults), volumes; then setupOptionsFrame with the options frame hidden."""
        for effect in slicer.qSlicerSegmentEditorEffectFactory.instance().copyEffects(self.effects):
            effect.setCallbackSlots(self)
            effect.setSegmentEditorLogic(self.logic)
            if self.parameterSetNode is not None:
                self._connectEffectToNode(effect)
            effect.setupOptionsFrame()
            effect.optionsFrame().visible = False

    def setSegmentationNode(self, node):
        self.logic.SetSegmentationNode(node)
        self.updateEffectsSectionFromMRML()

    def setSourceVolumeNode(self, node):
        """onSourceVolumeNodeChanged -> logic, then notifyEffectsOfSourceVolumeNodeChange (every effect)."""
        self.logic.SetSourceVolumeNode(node)
        for effect in self.effects:
            effect.sourceVolumeNodeChanged()
        self.updateEffectsSectionFromMRML()

    def setCurrentSegmentID(self, segmentId):
        self.logic.SetCurrentSegmentID(segmentId)

    def effectByName(self, name):
        return next((e for e in self.effects if name and e.name == name), None)

    # -- activation --------------------------------------------------------------------------------------
    def setActiveEffectByName(self, name):
        """setActiveEffectByName -> setActiveEffect: only sets the node's active effect name; the
        node's Modified event runs updateEffectsSectionFromMRML."""
        threadcheck.check("segmentEditorWidget.setActiveEffectByName")
        effect = self.effectByName(name)
        if self.parameterSetNode is None:
            return
        self.parameterSetNode.SetActiveEffectName(effect.name if effect is not None else "")
        self.updateEffectsSectionFromMRML()

    def updateEffectsSectionFromMRML(self):
        """updateEffectsSectionFromMRML: deactivate the previous effect; activate the new one after
        making binary labelmap the source representation and observing the views."""
        if self.parameterSetNode is None:
            return
        newEffect = self.effectByName(self.parameterSetNode.GetActiveEffectName() or "")
        if newEffect is self.activeEffect:
            return
        if self.activeEffect is not None:
            self.activeEffect.deactivate()
        if newEffect is not None and not self.logic.SetSourceRepresentationToBinaryLabelMap():
            newEffect = None
        if newEffect is not None:
            self.setupViewObservations()
            newEffect.activate()
        else:
            self.removeViewObservations()
        self.activeEffect = newEffect

    # -- views -------------------------------------------------------------------------------------------
    def setupViewObservations(self):
        """setupViewObservations: observe each slice view's interactor (priority 1.0) and slice node."""
        self.removeViewObservations()
        layoutManager = self.environment.layoutManager
        if layoutManager is None:
            return
        for name in layoutManager.sliceViewNames():
            widget = layoutManager.sliceWidget(name)
            interactor = widget.sliceView().interactorStyle().GetInteractor()
            for eventName in INTERACTOR_EVENTS:
                eventId = getattr(vtk.vtkCommand, eventName)
                tag = interactor.AddObserver(
                    eventId, lambda caller, event, w=widget: self.processEvents(caller, event, w), 1.0)
                self._viewObservations.append((interactor, tag))
            sliceNode = widget.sliceLogic().GetSliceNode()
            tag = sliceNode.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                        lambda caller, event, w=widget: self.processEvents(caller, event, w), 1.0)
            self._viewObservations.append((sliceNode, tag))

    def removeViewObservations(self):
        for observed, tag in self._viewObservations:
            observed.RemoveObserver(tag)
        self._viewObservations = []

    def processEvents(self, caller, event, viewWidget):
        """processEvents: nothing while the scene closes or without an editor node / active effect;
        interactor events -> processInteractionEvents, view node events -> processViewNodeEvents."""
        scene = self.environment.core.scene
        if scene is None or scene.IsClosing() or self.parameterSetNode is None or self.activeEffect is None:
            return
        eventId = getattr(vtk.vtkCommand, event) if isinstance(event, str) else event
        if caller.IsA("vtkRenderWindowInteractor"):
            handled = self.activeEffect.processInteractionEvents(caller, eventId, viewWidget)
            self.handledEvents.append((viewWidget.mrmlSliceNode().GetLayoutName(), event, handled))
        elif caller.IsA("vtkMRMLAbstractViewNode"):
            self.activeEffect.processViewNodeEvents(caller, eventId, viewWidget)

    # -- callbacks the effects call (setCallbackSlots) -----------------------------------------------------
    def saveStateForUndo(self):
        """saveStateForUndo -> vtkSlicerSegmentEditorLogic::SaveStateForUndo."""
        self.logic.SaveStateForUndo()

    def updateVolume(self, which):
        """updateVolume -> vtkSlicerSegmentEditorLogic::UpdateVolume, which dispatches on the volume
        pointer to these updaters; the volume on success, else None."""
        logic = self.logic
        update = {
            "alignedSource": (logic.UpdateAlignedSourceVolume, logic.GetAlignedSourceVolume),
            "modifier": (logic.ResetModifierLabelmapToDefault, logic.GetModifierLabelmap),
            "mask": (logic.UpdateMaskLabelmap, logic.GetMaskLabelmap),
            "selectedSegment": (logic.UpdateSelectedSegmentLabelmap, logic.GetSelectedSegmentLabelmap),
            "referenceGeometry": (logic.UpdateReferenceGeometryImage, logic.GetReferenceGeometryImage),
        }[which]
        return update[1]() if update[0]() else None

    # -- toolbar -------------------------------------------------------------------------------------------
    def undo(self):
        """undo -> vtkSlicerSegmentEditorLogic::Undo."""
        threadcheck.check("segmentEditorWidget.undo")
        self.logic.Undo()

    def redo(self):
        threadcheck.check("segmentEditorWidget.redo")
        self.logic.Redo()

    def close(self):
        """What the widget's destruction does to its effects (5.10: cleanup before deletion)."""
        if self.activeEffect is not None:
            self.activeEffect.deactivate()
            self.activeEffect = None
        self.removeViewObservations()
        self._removeNodeObservations()
        for effect in self.effects:
            effect.cleanup()
        self.effects = []
