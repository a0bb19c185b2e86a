"""The MedSAM Segment Editor effect and its Qt-free helpers.

Deliberately empty of imports: Slicer loads SegmentEditorEffect.py by file path (see
SegmentEditorMedSAM.py), and the helpers (effectlogic, rubberband) must stay importable without Qt.
"""
