"""The "MedSAM" Segment Editor effect: a box prompt (drawn, or a markups ROI) -> MedSAM / LiteMedSAM.

Qt layer only: widgets, mouse events, dialogs and the event loop while the model works. The behaviour
(box, run, preview, apply, key boxes, pre-encoding) is MedSAMSegmentLib.effect.controller's, shared with
other front ends; this file adapts Slicer's scripted effect to it (SlicerEffectEditor).

Slicer loads this file under the module name of its folder, "SegmentEditorMedSAMLib"
(qSlicerSegmentEditorScriptedEffect::setPythonSource), so nothing may be imported from a package of that
name: the helpers live in MedSAMSegmentLib.effect.
"""

import logging
import os

import qt
import vtk

import slicer
from slicer.i18n import tr as _

from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

class SlicerEffectEditor:
    """The controller's editor adapter (MedSAMSegmentLib/effect/editors.py) over Slicer's scripted effect:
    parameters and node references on the segment editor node, masking and undo through the effect."""

    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect

    def parameter(self, name):
        # Slicer stores no empty value (qSlicerSegmentEditorAbstractEffect::setCommonParameter) and logs
        # "Parameter named ... cannot be found" for a read of one never stored: ask first.
        return self.scriptedEffect.parameter(name) if self.scriptedEffect.parameterDefined(name) else ""

    def setParameter(self, name, value):
        self.scriptedEffect.setParameter(name, value)

    def setParameterDefault(self, name, value):
        self.scriptedEffect.setParameterDefault(name, value)

    def nodeReference(self, name):
        return self.scriptedEffect.nodeReference(name)

    def setNodeReference(self, name, node):
        self.scriptedEffect.setNodeReference(name, node)

    def editorNode(self):
        return self.scriptedEffect.parameterSetNode()

    def scene(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        return parameterSetNode.GetScene() if parameterSetNode is not None else None

    def segmentationNode(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        return parameterSetNode.GetSegmentationNode() if parameterSetNode is not None else None

    def sourceVolumeNode(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        return parameterSetNode.GetSourceVolumeNode() if parameterSetNode is not None else None

    def selectedSegmentId(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        return parameterSetNode.GetSelectedSegmentID() if parameterSetNode is not None else None

    def referenceImage(self):
        return self.scriptedEffect.sourceVolumeImageData()

    def saveStateForUndo(self):
        self.scriptedEffect.saveStateForUndo()

    def modifySelectedSegment(self, labelmap, mode):
        modes = {"add": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd,
                 "remove": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeRemove}
        self.scriptedEffect.modifySelectedSegmentByLabelmap(labelmap, modes[mode])


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MedSAM"  # not translated: modules and tests find effects by name
        scriptedEffect.title = _("MedSAM")
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.bands = {}  # (slice widget, key slice or None for the first box) -> RubberBand
        self.connections = []  # (widget, signal, slot), disconnected in cleanup()
        self._controller = None
        self._shiftDrag = False  # the drag in progress adds a key-slice box
        self._firstBand = None  # (slice widget, RAS corners, slice offset) of the first box

    @property
    def controller(self):
        """The Qt-free controller (created on first use, so that loading the effect imports nothing heavy)."""
        if self._controller is None:
            from MedSAMSegmentLib.effect.controller import MedSAMEffectController

            self._controller = MedSAMEffectController(SlicerEffectEditor(self.scriptedEffect),
                                                      settingsProvider=self.settings, onStatus=self.setStatus)
        return self._controller

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        return "<html>" + _(
            "Segment the object inside a box with MedSAM / LiteMedSAM.<p><ul style='margin: 0'>"
            "<li><b>Draw box</b>: click and drag in any slice view (axial, coronal, sagittal); or choose a "
            "markups <b>ROI</b> (<i>Place ROI</i> to draw one).</li>"
            "<li><b>This slice</b> segments the slice of the box; <b>Propagate</b> follows the object through "
            "the ROI's slices, N slices each side, or the whole volume.</li>"
            "<li><b>Add box</b> (or Shift+drag): a box on another slice corrects the propagation there.</li>"
            "<li><b>Preview</b> shows the result in a separate, translucent segmentation; <b>Apply</b> writes it "
            "into the selected segment (one undo step; the editable area, intensity range and overwrite "
            "settings apply); <b>Cancel</b> stops a run, or discards the preview and the boxes.</li></ul>"
            "<b>Intensity</b>: MedSAM's own preprocessing (CT window 40/400, MR percentiles) unless you choose "
            "the view's window/level. Model, device, weights and dependencies: MedSAMSegment module.")

    # -- options ------------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        from MedSAMSegmentLib.model.device import DEVICES
        from MedSAMSegmentLib.model.registry import get_spec, known_models

        self.drawButton = qt.QRadioButton(_("Draw box"))
        self.drawButton.toolTip = _("Click and drag in a slice view to draw the box prompt")
        self.roiButton = qt.QRadioButton(_("ROI"))
        self.roiSelector = slicer.qMRMLNodeComboBox()
        self.roiSelector.nodeTypes = ["vtkMRMLMarkupsROINode"]
        self.roiSelector.noneEnabled = True
        self.roiSelector.addEnabled = True
        self.roiSelector.removeEnabled = False
        self.roiSelector.setMRMLScene(slicer.mrmlScene)
        self.roiPlaceWidget = slicer.qSlicerMarkupsPlaceWidget()
        self.roiPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.roiPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup
        self.roiPlaceWidget.buttonsVisible = False
        self.roiPlaceWidget.placeButton().show()
        self.roiPlaceWidget.placeButton().toolTip = _("Place ROI: click and drag in a view")
        promptRow = qt.QHBoxLayout()
        for widget in (self.drawButton, self.roiButton, self.roiSelector, self.roiPlaceWidget):
            promptRow.addWidget(widget)
        self.scriptedEffect.addLabeledOptionsWidget(_("Prompt:"), promptRow)

        self.addBoxCheckBox = qt.QCheckBox(_("Add box"))
        self.addBoxCheckBox.toolTip = _("A box drawn on another slice corrects the propagation there "
                                        "(Shift+drag does the same)")
        self.keyBoxCombo = qt.QComboBox()
        self.keyBoxCombo.toolTip = _("Added boxes, by slice")
        self.removeKeyBoxButton = qt.QPushButton(_("Remove box"))
        keyRow = qt.QHBoxLayout()
        for widget in (self.addBoxCheckBox, self.keyBoxCombo, self.removeKeyBoxButton):
            keyRow.addWidget(widget)
        self.scriptedEffect.addLabeledOptionsWidget(_("Added boxes:"), keyRow)

        self.modeCombo = self._combo([("slice", _("This slice")), ("propagate", _("Propagate"))])
        self.rangeCombo = self._combo([("around", _("N slices around")), ("roi", _("ROI slices")),
                                       ("volume", _("Whole volume"))])
        self.aroundSpin = qt.QSpinBox()
        self.aroundSpin.setRange(1, 1000)
        self.aroundSpin.toolTip = _("Slices each side of the box's slice")
        modeRow = qt.QHBoxLayout()
        for widget in (self.modeCombo, self.rangeCombo, self.aroundSpin):
            modeRow.addWidget(widget)
        self.scriptedEffect.addLabeledOptionsWidget(_("Slices:"), modeRow)

        self.intensityCombo = self._combo([("auto", _("MedSAM preprocessing (CT or MR, from the voxels)")),
                                           ("CT", _("CT window 40/400")), ("MR", _("MR percentiles 0.5-99.5")),
                                           ("view", _("The view's window/level"))])
        self.intensityCombo.toolTip = _("What the model sees. MedSAM was trained on its own preprocessing; "
                                        "the view's window/level can cost much accuracy (see the documentation).")
        self.scriptedEffect.addLabeledOptionsWidget(_("Intensity:"), self.intensityCombo)

        self.modelCombo = self._combo([("", _("Module setting"))] + [(n, get_spec(n).title) for n in known_models()])
        self.deviceCombo = self._combo([("", _("Module setting"))] + [(d, d) for d in DEVICES])
        modelRow = qt.QHBoxLayout()
        modelRow.addWidget(self.modelCombo)
        modelRow.addWidget(self.deviceCombo)
        self.scriptedEffect.addLabeledOptionsWidget(_("Model:"), modelRow)
        self.applyModeCombo = self._combo([("add", _("Add to segment")),
                                           ("set", _("Replace segment in the processed slices"))])
        self.scriptedEffect.addLabeledOptionsWidget(_("Apply:"), self.applyModeCombo)

        self.previewButton = qt.QPushButton(_("Preview"))
        self.previewButton.objectName = self.__class__.__name__ + "Preview"
        self.applyButton = qt.QPushButton(_("Apply"))
        self.applyButton.objectName = self.__class__.__name__ + "Apply"
        self.cancelButton = qt.QPushButton(_("Cancel"))
        self.cancelButton.objectName = self.__class__.__name__ + "Cancel"
        buttonRow = qt.QHBoxLayout()
        for button in (self.previewButton, self.applyButton, self.cancelButton):
            buttonRow.addWidget(button)
        self.scriptedEffect.addOptionsWidget(buttonRow)
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self._connect(self.drawButton, "toggled(bool)", self.updateMRMLFromGUI)
        self._connect(self.roiButton, "toggled(bool)", self.onRoiToggled)
        self._connect(self.roiSelector, "currentNodeChanged(vtkMRMLNode*)", self.updateMRMLFromGUI)
        self._connect(self.aroundSpin, "valueChanged(int)", self.updateMRMLFromGUI)
        self._connect(self.addBoxCheckBox, "toggled(bool)", self.updateMRMLFromGUI)
        self._connect(self.removeKeyBoxButton, "clicked()", self.onRemoveKeyBox)
        self._connect(self.previewButton, "clicked()", self.onPreview)
        self._connect(self.applyButton, "clicked()", self.onApply)
        self._connect(self.cancelButton, "clicked()", self.onCancel)

    def _combo(self, items):
        combo = qt.QComboBox()
        for value, label in items:
            combo.addItem(label, value)
        self._connect(combo, "currentIndexChanged(int)", self.updateMRMLFromGUI)
        return combo

    def _connect(self, widget, signal, slot):
        widget.connect(signal, slot)
        self.connections.append((widget, signal, slot))

    def _combos(self):
        return ((self.modeCombo, "Mode"), (self.rangeCombo, "Range"), (self.intensityCombo, "Intensity"),
                (self.modelCombo, "Model"), (self.deviceCombo, "Device"), (self.applyModeCombo, "ApplyMode"))

    def setMRMLDefaults(self):
        self.controller.setDefaults()

    def updateGUIFromMRML(self):
        if self.scriptedEffect.parameterSetNode() is None:
            return
        controller = self.controller
        widgets = [self.drawButton, self.roiButton, self.roiSelector, self.aroundSpin, self.addBoxCheckBox,
                   self.keyBoxCombo] + [combo for combo, _name in self._combos()]
        blocked = [w.blockSignals(True) for w in widgets]
        try:
            useRoi = controller.parameter("PromptSource") == "roi"
            self.drawButton.checked, self.roiButton.checked = not useRoi, useRoi
            roiNode = self.scriptedEffect.nodeReference("ROI")
            self.roiSelector.setCurrentNode(roiNode)
            self.roiSelector.enabled = useRoi
            self.roiPlaceWidget.enabled = useRoi
            self.roiPlaceWidget.setCurrentNode(roiNode)
            for combo, name in self._combos():
                combo.setCurrentIndex(max(0, combo.findData(controller.parameter(name))))
            propagate = controller.parameter("Mode") == "propagate"
            self.rangeCombo.enabled = propagate
            self.aroundSpin.value = int(controller.parameter("SlicesAround"))
            self.aroundSpin.enabled = propagate and controller.parameter("Range") == "around"
            self.addBoxCheckBox.checked = controller.parameter("AddBox") == "1"
            self.addBoxCheckBox.enabled = propagate
            self.keyBoxCombo.clear()
            for box in controller.addedBoxes():
                self.keyBoxCombo.addItem(_("slice {index} ({axis})").format(index=box.keySlice, axis=box.axis.upper()),
                                         box.keySlice)
            self.removeKeyBoxButton.enabled = self.keyBoxCombo.count > 0
        finally:
            for widget, wasBlocked in zip(widgets, blocked):
                widget.blockSignals(wasBlocked)
        busy = controller.busy
        hasPreview = controller.previewNode() is not None
        self.applyButton.enabled = not busy
        self.previewButton.enabled = not busy
        self.cancelButton.enabled = busy or hasPreview or bool(controller.parameter("Box"))
        self.previewButton.text = _("Update preview") if hasPreview else _("Preview")

    def updateMRMLFromGUI(self, *args):
        self.scriptedEffect.setParameter("PromptSource", "roi" if self.roiButton.checked else "draw")
        self.scriptedEffect.setNodeReference("ROI", self.roiSelector.currentNode())
        for combo, name in self._combos():
            self.scriptedEffect.setParameter(name, combo.currentData)
        self.scriptedEffect.setParameter("SlicesAround", str(self.aroundSpin.value))
        self.scriptedEffect.setParameter("AddBox", "1" if self.addBoxCheckBox.checked else "0")
        self.controller.dropStalePreview()

    # -- life cycle ---------------------------------------------------------------------------------
    def activate(self):
        self.updateGUIFromMRML()

    def deactivate(self):
        self.controller.deactivate()
        for (sliceWidget, _key), band in self.bands.items():
            self.scriptedEffect.removeActor2D(sliceWidget, band.actor)
        self.bands = {}

    def cleanup(self):
        # Slicer >= 5.10 calls this before deleting the effect (when its segment editor widget goes):
        # connections from Qt to bound methods would keep this object alive. The views may already be
        # gone, so their actors are only forgotten, not removed.
        if self._controller is not None:
            # Stop its threads and break the effect <-> controller cycle (bound-method callbacks), so
            # Python's cycle collector does not free VTK objects later, in whatever thread it runs.
            self._controller.shutdown()
            self._controller = None
        for widget, signal, slot in self.connections:
            widget.disconnect(signal, slot)
        self.connections = []
        self.bands = {}

    def sourceVolumeNodeChanged(self):
        self.controller.clearBoxes()
        self.controller.removePreview()
        self.clearBands()

    def interactionNodeModified(self, interactionNode):
        # Like the base class (deactivate when markups placement starts, so that a click does not both
        # place a point and start a box), except while the prompt is an ROI: then the placement is ours.
        if interactionNode is None or interactionNode.GetCurrentInteractionMode() == interactionNode.ViewTransform:
            return
        if self.controller.parameter("PromptSource") != "roi":
            self.scriptedEffect.selectEffect("")

    # -- box drawing in slice views -----------------------------------------------------------------
    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        from MedSAMSegmentLib.errors import InputError

        if viewWidget.className() != "qMRMLSliceWidget" or self.controller.busy:
            return False
        if self.controller.parameter("PromptSource") != "draw":
            return False  # the ROI's own widget handles the mouse
        controller = self.controller
        xy = callerInteractor.GetEventPosition()
        if eventId == vtk.vtkCommand.LeftButtonPressEvent:
            if callerInteractor.GetControlKey() or callerInteractor.GetAltKey():
                return False  # left to Slicer (e.g. Ctrl+click)
            controller.press(viewWidget, xy)
            self._shiftDrag = bool(callerInteractor.GetShiftKey())
            self.bandFor(viewWidget, None).start(xy)
            self.scriptedEffect.cursorOff(viewWidget)
            return True
        if eventId == vtk.vtkCommand.MouseMoveEvent and controller.dragging(viewWidget):
            band = self.bandFor(viewWidget, None)
            band.setXy(band.startXy, xy)
            self.scriptedEffect.scheduleRender(viewWidget)
            return True
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and controller.dragging(viewWidget):
            self.scriptedEffect.cursorOn(viewWidget)
            sliceNode = viewWidget.sliceLogic().GetSliceNode()
            xyToRas = slicer.util.arrayFromVTKMatrix(sliceNode.GetXYToRAS())
            band = self.bandFor(viewWidget, None)
            corners = [self.xyToRas(c, viewWidget) for c in band.displayCorners(xy)]
            adding = self._shiftDrag or self.controller.parameter("AddBox") == "1"
            try:
                prompt, added = controller.release(viewWidget, xy, xyToRas, addBox=adding)
            except InputError as exc:
                band.clear()
                self.setStatus(str(exc))
                self.restoreFirstBand(viewWidget)
                return True
            offset = viewWidget.sliceLogic().GetSliceOffset()
            if added:
                band.clear()
                self.restoreFirstBand(viewWidget)
                keyBand = self.bandFor(viewWidget, prompt.keySlice)
                keyBand.finish(corners, offset)
                keyBand.reposition(lambda ras: self.rasToXy(ras, viewWidget), offset)
            else:
                self.clearBands()
                band = self.bandFor(viewWidget, None)
                band.finish(corners, offset)
                band.reposition(lambda ras: self.rasToXy(ras, viewWidget), offset)
                self._firstBand = (viewWidget, corners, offset)
            self.afterBoxesChanged(keyBoxChanged=added)
            return True
        return False

    def afterBoxesChanged(self, keyBoxChanged):
        """A key box added or removed while a preview is shown updates the preview (issue 12: decoder
        work only, the slices it cannot change are re-used). It runs after this event returns, so the
        mouse handler does not turn the event loop itself. Any other change makes the preview stale."""
        if keyBoxChanged and self.controller.previewNode() is not None:
            qt.QTimer.singleShot(0, self.updatePreview)
        else:
            self.controller.dropStalePreview()
        self.updateGUIFromMRML()

    def updatePreview(self):
        outcome = self.runAction("preview")
        if outcome is None or outcome.state != "previewed":
            self.controller.dropStalePreview()  # never leave a preview of other boxes on show
            self.updateGUIFromMRML()

    def processViewNodeEvents(self, callerViewNode, eventId, viewWidget):
        if not callerViewNode or not callerViewNode.IsA("vtkMRMLSliceNode"):
            return
        offset = viewWidget.sliceLogic().GetSliceOffset()
        for (sliceWidget, _key), band in self.bands.items():
            if sliceWidget is viewWidget:
                band.reposition(lambda ras: self.rasToXy(ras, viewWidget), offset)
        sliceNode = viewWidget.sliceLogic().GetSliceNode()
        dimensions = sliceNode.GetDimensions()
        xyToRas = slicer.util.arrayFromVTKMatrix(sliceNode.GetXYToRAS())
        try:  # pre-encode the slice in view; never let it disturb the view
            self.controller.viewChanged(xyToRas, (dimensions[0] / 2.0, dimensions[1] / 2.0))
        except Exception as exc:
            logging.debug(f"MedSAM pre-encoding skipped: {exc}")

    def bandFor(self, sliceWidget, keySlice):
        from MedSAMSegmentLib.effect.rubberband import RubberBand

        if (sliceWidget, keySlice) not in self.bands:
            self.bands[(sliceWidget, keySlice)] = RubberBand()
            self.scriptedEffect.addActor2D(sliceWidget, self.bands[(sliceWidget, keySlice)].actor)
        return self.bands[(sliceWidget, keySlice)]

    def restoreFirstBand(self, viewWidget):
        """A drag that did not replace the first box: show the first box again where it was."""
        first = getattr(self, "_firstBand", None)
        if first is not None and first[0] is viewWidget and self.controller.parameter("Box"):
            band = self.bandFor(viewWidget, None)
            band.finish(first[1], first[2])
            band.reposition(lambda ras: self.rasToXy(ras, viewWidget), viewWidget.sliceLogic().GetSliceOffset())

    def clearBands(self):
        for band in self.bands.values():
            band.clear()
        self._firstBand = None

    def onRemoveKeyBox(self):
        from MedSAMSegmentLib.errors import InputError

        keySlice = self.keyBoxCombo.currentData
        if keySlice is None:
            return
        try:
            self.controller.removeKeyBox(int(keySlice))
        except InputError as exc:
            self.setStatus(str(exc))
            return
        for (sliceWidget, key), band in list(self.bands.items()):
            if key == int(keySlice):
                band.clear()
        self.setStatus(_("Removed the box on slice {index}").format(index=keySlice))
        self.afterBoxesChanged(keyBoxChanged=True)

    def onRoiToggled(self, checked):
        # The place button needs a node to place: give the ROI prompt one when there is none yet.
        if checked and self.roiSelector.currentNode() is None:
            roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", _("MedSAM box"))
            self.roiSelector.setCurrentNode(roiNode)
        self.updateMRMLFromGUI()

    # -- compute, preview, apply --------------------------------------------------------------------
    def previewNode(self):
        return self.controller.previewNode()

    def setStatus(self, text):
        if hasattr(self, "statusLabel"):
            self.statusLabel.text = text
        logging.info(f"MedSAM effect: {text}")

    def settings(self):
        """The module's settings, with this effect's model / device choices on top."""
        from MedSAMSegment import loadSettings

        settings = loadSettings()
        for name, field in (("Model", "model"), ("Device", "device")):
            if self.controller.parameter(name):
                setattr(settings, field, self.controller.parameter(name))
        return settings.validate()

    def onPreview(self):
        self.runAction("preview")

    def onApply(self):
        self.runAction("apply")

    def runAction(self, action):
        """Run the model in a worker thread while this (GUI) thread keeps Slicer responsive, then write
        the result on this thread; returns the controller's RunOutcome (None if it did not run).
        Dependencies are installed only with consent. The pattern is slicer.packaging's for pip (Slicer
        5.12): a worker thread, and the main thread turning processEvents() under a modal dialog."""
        from MedSAMSegmentLib import dependencies
        from MedSAMSegmentLib.errors import MedSAMError, WeightsError

        controller = self.controller
        if controller.busy:
            self.setStatus(_("MedSAM is already running: wait for it or Cancel"))
            return None
        job = None
        try:
            if not dependencies.ready() and not dependencies.ensure(askConfirmation=True, requester="MedSAM"):
                self.setStatus(_("MedSAM needs: {missing}").format(missing=", ".join(dependencies.describeMissing())))
                return None
            job = controller.startRun(action)
            self.updateGUIFromMRML()
            if job is not None:
                self.waitForJob(job)
            return controller.finishRun(job)
        except WeightsError as exc:
            self.setStatus(str(exc))
            slicer.util.errorDisplay(_("{error}\n\nThe MedSAM Segment module can download or select the weights.").format(
                error=exc), windowTitle=_("MedSAM: model weights"))
        except MedSAMError as exc:
            self.setStatus(str(exc))
            slicer.util.errorDisplay(str(exc), windowTitle=_("MedSAM"))
        except Exception as exc:
            logging.exception("MedSAM effect failed")
            self.setStatus(_("MedSAM failed: {error}").format(error=exc))
            slicer.util.errorDisplay(_("MedSAM failed: {error}").format(error=exc), windowTitle=_("MedSAM"))
        finally:
            if job is not None and controller.job is job:  # the wait itself failed: stop the worker
                job.cancel()
                controller.job = None
            self.updateGUIFromMRML()
        return None

    def waitForJob(self, job):
        """Keep the GUI live until the job ends or the user cancels (the dialog's or the effect's Cancel)."""
        from MedSAMSegment import waitForJob

        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), windowTitle=_("MedSAM"),
                                                  labelText=_("Loading the model..."), maximum=0)
        # Modal: the views keep painting and the dialog's Cancel works, but no other run (the module's
        # batch panel, another editor) can start a nested event loop under this one.
        dialog.setModal(True)
        try:
            waitForJob(job, dialog, lambda done, total: _("Segmented {done} of {total} slices").format(
                done=done, total=total))
        finally:
            dialog.close()

    def onCancel(self):
        self.controller.cancel()
        if not self.controller.busy:
            self.clearBands()
        self.updateGUIFromMRML()
