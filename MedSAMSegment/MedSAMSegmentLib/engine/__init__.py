"""Segmentation on numpy volumes: slices to the model's input, embeddings cached, box prompts
decoded, propagation through the volume, added key-slice boxes. No MRML, no files.

  intensity.py        CT window / MR percentiles / explicit window -> uint8, slice by slice
  preprocess.py       per-model slice resize and normalisation, box scaling, mask from logits
  embedding_cache.py  thread-safe LRU of slice embeddings, bounded in bytes
  predictor.py        encoder + decoder with the cache; out-of-memory fall-backs; foreground first
  pre_encoder.py      background pre-encoding of the viewed slice and its neighbours
  slicing.py          slices of a (K, J, I) volume along i/j/k; index boxes
  geometry.py         axis choice, ROI -> tight voxel index box
  propagation.py      slice-by-slice propagation (official; default: candidate boxes, stop rules)
  key_boxes.py        boxes added on further key slices
  metrics.py          Dice
"""
