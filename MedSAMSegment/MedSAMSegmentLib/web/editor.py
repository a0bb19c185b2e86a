"""The effect controller's editor adapter for trame-slicer (see effect/editors.py for the interface).

trame-slicer 2.0 keeps the selected segment in Python (SegmentModifier.active_segment_id) and records
undo in its own py-undo-stack (the segment editor logic's history is switched off). Everything else
is the same vtkSlicerSegmentEditorLogic and vtkMRMLSegmentEditorNode the LogicEditor adapts, so
parameters, node references and the aligned source volume come from there unchanged.
"""

from contextlib import contextmanager

from ..effect.editors import LogicEditor


class TrameEditor(LogicEditor):
    """Adapter over trame_slicer.core.SegmentationEditor."""

    def __init__(self, segmentationEditor):
        super().__init__(segmentationEditor.editor_logic)
        self.segmentationEditor = segmentationEditor

    def segmentationNode(self):
        return self.segmentationEditor.active_segmentation_node

    def sourceVolumeNode(self):
        return self.segmentationEditor.active_volume_node

    def selectedSegmentId(self):
        return self.segmentationEditor.active_segment_id or ""

    def referenceImage(self):
        segmentation = self.segmentationEditor.active_segmentation
        if segmentation is None:
            return None
        segmentation.set_active()  # the logic's segmentation and source volume are this editor's
        return super().referenceImage()

    def saveStateForUndo(self):
        """Nothing to do here: each modification below records its before/after state on
        trame-slicer's undo stack, and undoStep() merges them into one step."""

    @contextmanager
    def undoStep(self, text="MedSAM"):
        """Every segment change inside is one undo step (the controller's apply: remove + add)."""
        segmentation = self.segmentationEditor.active_segmentation
        if segmentation is None:
            yield
            return
        with segmentation.group_undo_commands(text):
            yield

    def modifySelectedSegment(self, labelmap, mode):
        from trame_slicer.segmentation import ModificationMode

        modifier = self.segmentationEditor.active_segment_modifier
        modes = {"add": ModificationMode.Add, "remove": ModificationMode.Remove}
        # Per segment, masking not bypassed: the editable area / intensity range / overwrite
        # settings of the editor node apply, as for the desktop effect.
        modifier.apply_labelmap(labelmap, segment_id=self.selectedSegmentId(), modification_mode=modes[mode],
                                is_per_segment=True, do_bypass_masking=False)

    def undo(self):
        stack = self.segmentationEditor.undo_stack
        if stack is not None and stack.can_undo():
            stack.undo()

    def redo(self):
        stack = self.segmentationEditor.undo_stack
        if stack is not None and stack.can_redo():
            stack.redo()
