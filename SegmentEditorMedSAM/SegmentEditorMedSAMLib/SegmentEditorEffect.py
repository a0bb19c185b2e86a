"""The "MedSAM" Segment Editor effect: a box prompt (drawn, or a markups ROI) -> MedSAM / LiteMedSAM.

Qt layer only: widgets, mouse events, dialogs. Geometry, the preview node and the labelmap come from
effectlogic.py and the rubber band from rubberband.py (both Qt-free and tested under pytest); the model
runs through MedSAMSegmentLib.mrml_logic.MedSAMLogic.
"""

import logging
import os

import qt
import vtk

import slicer
from slicer.i18n import tr as _

from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

PARAMETER_DEFAULTS = {
    "PromptSource": "draw",  # draw | roi
    "Mode": "propagate",  # effectlogic.MODES
    "Range": "around",  # effectlogic.RANGES
    "SlicesAround": "10",
    "ApplyMode": "add",  # effectlogic.APPLY_MODES
    "Box": "",  # BoxPrompt.toParameter() of the last drawn box
    "Model": "",  # "" = the model chosen in the MedSAMSegment module
    "Device": "",  # "" = the device chosen in the MedSAMSegment module
}
ROI_REFERENCE = "ROI"
PREVIEW_REFERENCE = "Preview"


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MedSAM"  # not translated: modules and tests find effects by name
        scriptedEffect.title = _("MedSAM")
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.bands = {}  # slice widget -> RubberBand
        self.busy = False  # guards against re-entry through processEvents during a run
        self.pending = None  # (labelmap, processed-slices slab, prompt signature) shown in the preview
        self.connections = []  # (widget, signal, slot), disconnected in cleanup()

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
            "<li><b>Preview</b> shows the result in a separate, translucent segmentation; <b>Apply</b> writes it "
            "into the selected segment (one undo step; the editable area, intensity range and overwrite "
            "settings apply); <b>Cancel</b> discards it.</li></ul>"
            "Model, device, weights and dependencies: MedSAMSegment module.")

    # -- options ------------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        from MedSAMSegmentLib.device import DEVICES
        from MedSAMSegmentLib.registry import get_spec, known_models

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

    def setMRMLDefaults(self):
        for name, value in PARAMETER_DEFAULTS.items():
            self.scriptedEffect.setParameterDefault(name, value)

    def updateGUIFromMRML(self):
        if self.scriptedEffect.parameterSetNode() is None:
            return
        widgets = [self.drawButton, self.roiButton, self.roiSelector, self.modeCombo, self.rangeCombo,
                   self.aroundSpin, self.modelCombo, self.deviceCombo, self.applyModeCombo]
        blocked = [w.blockSignals(True) for w in widgets]
        try:
            useRoi = self.scriptedEffect.parameter("PromptSource") == "roi"
            self.drawButton.checked, self.roiButton.checked = not useRoi, useRoi
            self.roiSelector.setCurrentNode(self.scriptedEffect.nodeReference(ROI_REFERENCE))
            self.roiSelector.enabled = useRoi
            self.roiPlaceWidget.enabled = useRoi
            self.roiPlaceWidget.setCurrentNode(self.scriptedEffect.nodeReference(ROI_REFERENCE))
            for combo, name in ((self.modeCombo, "Mode"), (self.rangeCombo, "Range"), (self.modelCombo, "Model"),
                                (self.deviceCombo, "Device"), (self.applyModeCombo, "ApplyMode")):
                combo.setCurrentIndex(max(0, combo.findData(self.scriptedEffect.parameter(name))))
            propagate = self.scriptedEffect.parameter("Mode") == "propagate"
            self.rangeCombo.enabled = propagate
            self.aroundSpin.value = self.scriptedEffect.integerParameter("SlicesAround")
            self.aroundSpin.enabled = propagate and self.scriptedEffect.parameter("Range") == "around"
        finally:
            for widget, wasBlocked in zip(widgets, blocked):
                widget.blockSignals(wasBlocked)
        hasPreview = self.previewNode() is not None
        self.applyButton.enabled = not self.busy
        self.cancelButton.enabled = hasPreview or bool(self.scriptedEffect.parameter("Box"))
        self.previewButton.enabled = not self.busy
        self.previewButton.text = _("Update preview") if hasPreview else _("Preview")

    def updateMRMLFromGUI(self, *args):
        self.scriptedEffect.setParameter("PromptSource", "roi" if self.roiButton.checked else "draw")
        self.scriptedEffect.setNodeReference(ROI_REFERENCE, self.roiSelector.currentNode())
        for combo, name in ((self.modeCombo, "Mode"), (self.rangeCombo, "Range"), (self.modelCombo, "Model"),
                            (self.deviceCombo, "Device"), (self.applyModeCombo, "ApplyMode")):
            self.scriptedEffect.setParameter(name, combo.currentData)
        self.scriptedEffect.setParameter("SlicesAround", str(self.aroundSpin.value))
        self.dropStalePreview()

    # -- life cycle ---------------------------------------------------------------------------------
    def activate(self):
        self.updateGUIFromMRML()

    def deactivate(self):
        self.removePreview()
        for sliceWidget, band in self.bands.items():
            self.scriptedEffect.removeActor2D(sliceWidget, band.actor)
        self.bands = {}

    def cleanup(self):
        # Slicer >= 5.10 calls this before deleting the effect (when its segment editor widget goes):
        # connections from Qt to bound methods would keep this object alive. The views may already be
        # gone, so their actors are only forgotten, not removed.
        for widget, signal, slot in self.connections:
            widget.disconnect(signal, slot)
        self.connections = []
        self.bands = {}
        self.pending = None

    def sourceVolumeNodeChanged(self):
        self.scriptedEffect.setParameter("Box", "")
        self.removePreview()

    def interactionNodeModified(self, interactionNode):
        # Like the base class (deactivate when markups placement starts, so that a click does not both
        # place a point and start a box), except while the prompt is an ROI: then the placement is ours.
        if interactionNode is None or interactionNode.GetCurrentInteractionMode() == interactionNode.ViewTransform:
            return
        if self.scriptedEffect.parameter("PromptSource") != "roi":
            self.scriptedEffect.selectEffect("")

    # -- box drawing in slice views -----------------------------------------------------------------
    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        from SegmentEditorMedSAMLib import effectlogic
        from MedSAMSegmentLib.errors import InputError

        if viewWidget.className() != "qMRMLSliceWidget" or self.busy:
            return False
        if self.scriptedEffect.parameter("PromptSource") != "draw":
            return False  # the ROI's own widget handles the mouse
        band = self.bandForWidget(viewWidget)
        anyModifierKeyPressed = callerInteractor.GetShiftKey() or callerInteractor.GetControlKey() or callerInteractor.GetAltKey()
        xy = callerInteractor.GetEventPosition()
        if eventId == vtk.vtkCommand.LeftButtonPressEvent and not anyModifierKeyPressed:
            band.start(xy)
            self.scriptedEffect.cursorOff(viewWidget)
            return True
        if eventId == vtk.vtkCommand.MouseMoveEvent and band.dragging:
            band.setXy(band.startXy, xy)
            self.scriptedEffect.scheduleRender(viewWidget)
            return True
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and band.dragging:
            self.scriptedEffect.cursorOn(viewWidget)
            corners = [self.xyToRas(c, viewWidget) for c in band.displayCorners(xy)]
            sliceLogic = viewWidget.sliceLogic()
            sliceToRas = sliceLogic.GetSliceNode().GetSliceToRAS()
            normal = [sliceToRas.GetElement(row, 2) for row in range(3)]
            volumeNode = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
            try:
                if volumeNode is None:
                    raise InputError(_("Select a source volume first"))
                prompt = effectlogic.boxFromRasCorners(volumeNode, corners[0], corners[2], normal)
            except InputError as exc:
                band.clear()
                self.setStatus(str(exc))
                return True
            for otherBand in self.bands.values():
                otherBand.clear()
            band.finish(corners, sliceLogic.GetSliceOffset())
            band.reposition(lambda ras: self.rasToXy(ras, viewWidget), sliceLogic.GetSliceOffset())
            self.scriptedEffect.setParameter("Box", prompt.toParameter())
            self.dropStalePreview()
            self.setStatus(_("Box on slice {index} along {axis}: click Preview or Apply").format(
                index=prompt.keySlice, axis=prompt.axis.upper()))
            self.updateGUIFromMRML()
            return True
        return False

    def processViewNodeEvents(self, callerViewNode, eventId, viewWidget):
        band = self.bands.get(viewWidget)
        if band is not None and callerViewNode and callerViewNode.IsA("vtkMRMLSliceNode"):
            band.reposition(lambda ras: self.rasToXy(ras, viewWidget), viewWidget.sliceLogic().GetSliceOffset())

    def bandForWidget(self, sliceWidget):
        from SegmentEditorMedSAMLib.rubberband import RubberBand

        if sliceWidget not in self.bands:
            self.bands[sliceWidget] = RubberBand()
            self.scriptedEffect.addActor2D(sliceWidget, self.bands[sliceWidget].actor)
        return self.bands[sliceWidget]

    def onRoiToggled(self, checked):
        # The place button needs a node to place: give the ROI prompt one when there is none yet.
        if checked and self.roiSelector.currentNode() is None:
            roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", _("MedSAM box"))
            self.roiSelector.setCurrentNode(roiNode)
        self.updateMRMLFromGUI()

    # -- compute, preview, apply --------------------------------------------------------------------
    def previewNode(self):
        return self.scriptedEffect.nodeReference(PREVIEW_REFERENCE)

    def removePreview(self):
        self.pending = None
        previewNode = self.previewNode()
        if previewNode is not None:
            self.scriptedEffect.setNodeReference(PREVIEW_REFERENCE, None)
            slicer.mrmlScene.RemoveNode(previewNode)

    def promptSignature(self):
        """What the result depends on: a preview computed for another signature is stale."""
        roiNode = self.scriptedEffect.nodeReference(ROI_REFERENCE)
        names = ("PromptSource", "Box", "Mode", "Range", "SlicesAround", "Model", "Device")
        return (tuple(self.scriptedEffect.parameter(n) for n in names),
                self.scriptedEffect.parameterSetNode().GetSelectedSegmentID(),
                roiNode.GetID() if roiNode else None, roiNode.GetMTime() if roiNode else None)

    def dropStalePreview(self):
        if self.pending is not None and self.pending[2] != self.promptSignature():
            self.removePreview()

    def setStatus(self, text):
        self.statusLabel.text = text
        logging.info(f"MedSAM effect: {text}")

    def settings(self):
        """The module's settings, with this effect's model / device choices on top."""
        from MedSAMSegment import loadSettings

        settings = loadSettings()
        for name, field in (("Model", "model"), ("Device", "device")):
            if self.scriptedEffect.parameter(name):
                setattr(settings, field, self.scriptedEffect.parameter(name))
        return settings.validate()

    def compute(self):
        """Run the model for the current prompt: (labelmap on the editor's grid, processed-slices slab)."""
        from SegmentEditorMedSAMLib import effectlogic
        from MedSAMSegmentLib.errors import InputError
        from MedSAMSegmentLib.geometry import slice_range
        from MedSAMSegmentLib.mrml_logic import MedSAMLogic

        parameterSetNode = self.scriptedEffect.parameterSetNode()
        volumeNode = parameterSetNode.GetSourceVolumeNode()
        segmentationNode = parameterSetNode.GetSegmentationNode()
        if volumeNode is None or segmentationNode is None:
            raise InputError(_("Select a segmentation and a source volume first"))
        logic = MedSAMLogic(self.settings())
        if self.scriptedEffect.parameter("PromptSource") == "roi":
            roiNode = self.scriptedEffect.nodeReference(ROI_REFERENCE)
            if roiNode is None:
                raise InputError(_("Select or place an ROI first"))
            prompt = effectlogic.roiPrompt(logic, volumeNode, roiNode)
        else:
            prompt = effectlogic.BoxPrompt.fromParameter(self.scriptedEffect.parameter("Box"))
            if prompt is None:
                raise InputError(_("Draw a box in a slice view first"))
        box, keySlice = effectlogic.requestBox(prompt, self.scriptedEffect.parameter("Mode"),
                                               self.scriptedEffect.parameter("Range"),
                                               self.scriptedEffect.integerParameter("SlicesAround"),
                                               slicer.util.arrayFromVolume(volumeNode).shape)
        first, last = slice_range(box, prompt.axis)
        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), windowTitle=_("MedSAM"),
                                                  labelText=_("Loading the model..."), maximum=last - first + 1)
        try:
            def progress(done, total):
                dialog.maximum = total
                dialog.value = done
                dialog.labelText = _("Segmented {done} of {total} slices").format(done=done, total=total)
                slicer.app.processEvents()

            def cancel():
                slicer.app.processEvents()
                return dialog.wasCanceled

            slicer.app.processEvents()
            mask, info = logic.computeMask(volumeNode, indexBox=box, axis=prompt.axis, keySlice=keySlice,
                                           progressCallback=progress, cancelCallback=cancel)
        finally:
            dialog.close()
        reference = self.scriptedEffect.sourceVolumeImageData()
        if reference is None:
            raise InputError(_("The Segment Editor cannot align the source volume with the segmentation"))
        labelmap = effectlogic.maskToLabelmap(mask, volumeNode, segmentationNode, reference)
        slab = effectlogic.slabLabelmap(box, prompt.axis, volumeNode, segmentationNode, reference)
        self.setStatus(_("{voxels} voxels on slices {first}-{last} along {axis} ({window})").format(
            voxels=int(mask.sum()), first=first, last=last, axis=prompt.axis.upper(), window=info.get("window", "")))
        return labelmap, slab

    def run(self, action):
        """Call action() after the dependency check (installs only with consent), with error messages,
        a normal cursor again afterwards, and protection against re-entry through processEvents."""
        from MedSAMSegmentLib import dependencies
        from MedSAMSegmentLib.errors import CancelledError, MedSAMError, WeightsError

        if self.busy:
            return
        self.busy = True
        self.updateGUIFromMRML()
        try:
            if not dependencies.ready() and not dependencies.ensure(askConfirmation=True, requester="MedSAM"):
                self.setStatus(_("MedSAM needs: {missing}").format(missing=", ".join(dependencies.describeMissing())))
                return
            action()
        except CancelledError:
            self.setStatus(_("Cancelled: nothing was changed"))
        except WeightsError as exc:
            self.setStatus(str(exc))
            slicer.util.errorDisplay(_("{error}\n\nThe MedSAM Segment module can download or select the weights.").format(
                error=exc), windowTitle=_("MedSAM: model weights"))
        except MedSAMError as exc:
            self.setStatus(str(exc))
            slicer.util.errorDisplay(str(exc), windowTitle=_("MedSAM"))
        except Exception as exc:
            logging.exception("MedSAM effect failed")
            slicer.util.errorDisplay(_("MedSAM failed: {error}").format(error=exc), windowTitle=_("MedSAM"))
        finally:
            self.busy = False
            self.updateGUIFromMRML()

    def onPreview(self):
        self.run(self.preview)

    def preview(self):
        from SegmentEditorMedSAMLib import effectlogic

        labelmap, slab = self.compute()
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = parameterSetNode.GetSegmentationNode()
        segmentId = parameterSetNode.GetSelectedSegmentID()
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId) if segmentId else None
        previewNode = self.previewNode()
        if previewNode is None:
            previewNode = effectlogic.createPreviewNode(slicer.mrmlScene, segmentationNode)
            self.scriptedEffect.setNodeReference(PREVIEW_REFERENCE, previewNode)
        name, color = (segment.GetName(), segment.GetColor()) if segment else ("MedSAM", (1.0, 1.0, 0.0))
        effectlogic.updatePreview(previewNode, labelmap, name, color)
        self.pending = (labelmap, slab, self.promptSignature())

    def onApply(self):
        self.run(self.apply)

    def apply(self):
        """Write the previewed result (computed now if there is no preview) into the selected segment."""
        if self.pending is None or self.pending[2] != self.promptSignature():
            self.pending = (*self.compute(), self.promptSignature())
        labelmap, slab, _signature = self.pending
        self.scriptedEffect.saveStateForUndo()  # once: remove + add below are one undo step
        if self.scriptedEffect.parameter("ApplyMode") == "set":
            # The editor's "set" mode would clear the segment outside these slices too.
            self.scriptedEffect.modifySelectedSegmentByLabelmap(
                slab, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeRemove)
        self.scriptedEffect.modifySelectedSegmentByLabelmap(
            labelmap, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd)
        self.removePreview()
        self.setStatus(_("Applied to the selected segment (Undo reverts it)"))

    def onCancel(self):
        self.removePreview()
        self.scriptedEffect.setParameter("Box", "")
        for band in self.bands.values():
            band.clear()
        self.setStatus(_("Cleared"))
        self.updateGUIFromMRML()
