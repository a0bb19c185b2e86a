"""The MedSAM Segment Editor effect's Qt-free half, shared by every front end.

It lives in MedSAMSegmentLib, not next to the effect file: Slicer loads the effect file under its
folder's name (qSlicerSegmentEditorScriptedEffect::setPythonSource), which would shadow a helper package
of that name. Nothing is imported here, so `import MedSAMSegmentLib.effect` stays light.

  prompts.py     box prompts: a drawn rectangle (four corners) or a markups ROI -> voxel index box
  labelmaps.py   mask -> labelmap on the editor's grid, processed-slices slab, preview node (MRML)
  editors.py     adapters to a segment editor: Slicer's scripted effect, or the Qt-free editor logic
  job.py         model work in a worker thread, polled by the front end's event loop
  controller.py  the effect's state and actions (box, run, preview, apply, key boxes, pre-encoding)
  rubberband.py  the rectangle drawn in a slice view (VTK actor)
"""
