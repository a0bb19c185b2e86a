"""Folder of the MedSAM Segment Editor effect file (SegmentEditorEffect.py); nothing to import here.

Slicer loads SegmentEditorEffect.py by file path under this folder's name
(qSlicerSegmentEditorScriptedEffect::setPythonSource -> qSlicerScriptedUtils::loadSourceAsModule), so
`sys.modules["SegmentEditorMedSAMLib"]` becomes the effect file itself and no helper module could be
imported from this package inside Slicer. The effect's Qt-free helpers therefore live in
MedSAMSegmentLib.effect.
"""
