"""Files in and out without Slicer: images (NIfTI, NRRD), labelmaps and .seg.nrrd written atomically,
Slicer's .mrk.json ROI files.

  imageio.py  read images; write labelmaps and segmentations (never a partial file)
  markups.py  Slicer markups ROI files
"""
