"""Hidden module that registers the "MedSAM" Segment Editor effect, and the effect's self-test."""

import os

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest


class SegmentEditorMedSAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegmentEditorMedSAM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # MedSAMSegment holds the settings and MedSAMSegmentLib, which the effect uses.
        self.parent.dependencies = ["Segmentations", "MedSAMSegment"]
        self.parent.contributors = ["MedSAMSegment developers"]
        self.parent.hidden = True
        self.parent.helpText = _("This hidden module registers the MedSAM Segment Editor effect.")
        self.parent.acknowledgementText = _("See the MedSAMSegment module.")
        # The effect factory exists only once the application has started.
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as qSlicerSegmentationsEditorEffects

        instance = qSlicerSegmentationsEditorEffects.qSlicerSegmentEditorScriptedEffect(None)
        effectFilename = os.path.join(os.path.dirname(__file__), "SegmentEditorMedSAMLib", "SegmentEditorEffect.py")
        instance.setPythonSource(effectFilename.replace("\\", "/"))
        instance.self().register()


class SegmentEditorMedSAMTest(ScriptedLoadableModuleTest):
    """Drives the effect as a user would, on the bundled brain MR (LiteMedSAM, no download)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PreviewApplyUndo()

    def test_PreviewApplyUndo(self):
        from MedSAMSegmentLib import dependencies
        from MedSAMSegmentLib.demo import SAMPLE_IMAGE, SAMPLE_LABEL, dice, official_box

        if not dependencies.ready():
            # A self-test never installs: on an extension build server that would download gigabytes.
            self.skipTest("MedSAM's dependencies are not installed: " + ", ".join(dependencies.describeMissing()))
        volumeNode = slicer.util.loadVolume(str(SAMPLE_IMAGE))
        label = slicer.util.arrayFromVolume(slicer.util.loadLabelVolume(str(SAMPLE_LABEL))) > 0
        i0, j0, k0, i1, j1, k1 = official_box(label)
        middle = int((k1 - k0) / 2 + k0)

        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", "tumour")

        segmentEditorWidget = slicer.qMRMLSegmentEditorWidget()
        segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        segmentEditorWidget.setMaximumNumberOfUndoStates(10)
        segmentEditorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        segmentEditorWidget.setMRMLSegmentEditorNode(segmentEditorNode)
        segmentEditorWidget.setSegmentationNode(segmentationNode)
        segmentEditorWidget.setSourceVolumeNode(volumeNode)
        segmentEditorWidget.setCurrentSegmentID(segmentId)

        self.delayDisplay("Activate the MedSAM effect")
        segmentEditorWidget.setActiveEffectByName("MedSAM")
        effect = segmentEditorWidget.activeEffect()
        self.assertIsNotNone(effect, "the MedSAM effect is registered")
        # The box a user would drag on the tumour's middle slice (what the mouse handler stores).
        effect.setParameter("PromptSource", "draw")
        effect.setParameter("Box", f"k:{i0},{j0},{middle},{i1},{j1},{middle}")
        effect.setParameter("Model", "litemedsam")

        self.delayDisplay("This slice: preview, then apply")
        effect.setParameter("Mode", "slice")
        effect.self().onPreview()
        previewNode = effect.self().previewNode()
        self.assertIsNotNone(previewNode, "a preview segmentation was created")
        self.assertTrue(previewNode.GetName().endswith(" preview"))
        self.assertEqual(slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode).sum(), 0,
                         "the preview writes nothing into the segment")
        effect.self().onApply()
        self.assertIsNone(effect.self().previewNode(), "Apply removes the preview")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode) > 0
        self.assertGreater(dice(mask[middle], label[middle]), 0.3)
        self.assertEqual(int(mask.sum()), int(mask[middle].sum()), "only the box's slice was segmented")

        self.delayDisplay("Undo reverts the apply in one step")
        segmentEditorWidget.undo()
        self.assertEqual(slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode).sum(), 0)

        self.delayDisplay("Propagate through the tumour's slices")
        effect.setParameter("Mode", "propagate")
        effect.setParameter("Range", "around")
        effect.setParameter("SlicesAround", str(max(middle - k0, k1 - middle)))
        effect.self().onApply()
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode) > 0
        self.assertGreater(dice(mask[k0:k1 + 1], label[k0:k1 + 1]), 0.3)
        self.assertGreater(len({int(k) for k in mask.nonzero()[0]}), 1, "more than one slice was segmented")

        segmentEditorWidget.setActiveEffect(None)
        self.delayDisplay("Test passed")
