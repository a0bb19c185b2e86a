"""The engine on MRML nodes (Slicer, or slicer-core without Qt): volume, ROI and segmentation nodes
in, segments out.

  mrml_io.py     MRML <-> numpy: matrices, oriented images, segment writes, .seg.nrrd
  mrml_logic.py  MedSAMLogic, the console API and the module's logic
"""
