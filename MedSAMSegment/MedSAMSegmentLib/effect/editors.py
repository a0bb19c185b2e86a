"""Editor adapters: what the effect controller needs from a segment editor, for each front end.

The controller (controller.py) reads and writes only through this small interface:
parameters (strings) and node references, the selected segmentation / segment / source volume, the
editor's grid (the aligned source volume), save-state-for-undo and modify-the-selected-segment-by-a-
labelmap. Implementations:

- SlicerEffectEditor (in SegmentEditorEffect.py, because it runs only inside Slicer and is checked
  there against Slicer's API): Slicer's qSlicerSegmentEditorScriptedEffect. Its
  modifySelectedSegmentByLabelmap applies the editor's masking (editable area, intensity range,
  overwrite mode) and its saveStateForUndo goes into the editor's undo stack.
- LogicEditor (here): the Qt-free vtkSlicerSegmentEditorLogic (the console, tests, a web front end); the
  same masking and undo machinery, without widgets.

The interface: parameter / setParameter / setParameterDefault (strings), nodeReference /
setNodeReference, editorNode, scene, segmentationNode, sourceVolumeNode, selectedSegmentId,
referenceImage (the source volume on the segmentation's grid), saveStateForUndo, and
modifySelectedSegment(labelmap, "add" | "remove"). LogicEditor keeps parameters on the
vtkMRMLSegmentEditorNode as attributes named "<effect>.<name>", as the desktop effect stores them
(qSlicerSegmentEditorAbstractEffect::setParameter), so both front ends read the same scene.
"""

EFFECT_NAME = "MedSAM"


class LogicEditor:
    """Adapter over slicer-core's vtkSlicerSegmentEditorLogic and its vtkMRMLSegmentEditorNode."""

    def __init__(self, editorLogic):
        self.logic = editorLogic
        self._defaults = {}

    def _attribute(self, name):
        return f"{EFFECT_NAME}.{name}"

    def parameter(self, name):
        value = self.editorNode().GetAttribute(self._attribute(name))
        return self._defaults.get(name, "") if value is None else value

    def setParameter(self, name, value):
        self.editorNode().SetAttribute(self._attribute(name), str(value))

    def setParameterDefault(self, name, value):
        self._defaults[name] = str(value)

    def nodeReference(self, name):
        return self.editorNode().GetNodeReference(self._attribute(name))

    def setNodeReference(self, name, node):
        self.editorNode().SetNodeReferenceID(self._attribute(name), node.GetID() if node is not None else None)

    def editorNode(self):
        return self.logic.GetSegmentEditorNode()

    def scene(self):
        return self.logic.GetMRMLScene()

    def segmentationNode(self):
        return self.logic.GetSegmentationNode()

    def sourceVolumeNode(self):
        return self.logic.GetSourceVolumeNode()

    def selectedSegmentId(self):
        return self.logic.GetCurrentSegmentID()

    def referenceImage(self):
        if not self.logic.UpdateAlignedSourceVolume():
            return None
        return self.logic.GetAlignedSourceVolume()

    def saveStateForUndo(self):
        self.logic.SaveStateForUndo()

    def modifySelectedSegment(self, labelmap, mode):
        import slicer

        modes = {"add": slicer.vtkSlicerSegmentEditorLogic.ModificationModeAdd,
                 "remove": slicer.vtkSlicerSegmentEditorLogic.ModificationModeRemove}
        # isPerSegment=True, bypassMasking=False: the editable area / intensity range / overwrite
        # settings apply, as for a desktop effect.
        self.logic.ModifySegmentByLabelmap(self.segmentationNode(), self.selectedSegmentId(), labelmap,
                                           modes[mode], True, False)

    # undo / redo as the Segment Editor widget offers them
    def undo(self):
        self.logic.Undo()

    def redo(self):
        self.logic.Redo()

