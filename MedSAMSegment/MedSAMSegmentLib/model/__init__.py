"""The networks and their weights: which models exist, where their checkpoints come from, how they
are verified and loaded, and the inference fast paths of their encoders and decoder. Nothing is
imported here; torch is imported inside the functions that need it.

  registry.py      the models we know: names, architectures, checkpoints, checksums
  weights.py       find / verify / safely load checkpoints (weights_only, strict)
  download.py      atomic, resumable, checksummed download into the user cache
  sam_modules.py   segment_anything.modeling without the package __init__ (no torchvision)
  tinyvit.py       LiteMedSAM's TinyViT image encoder
  fast_encoder.py  inference-optimised encoders (folded batch norm, channels-last, bf16; staged steps)
  fast_vit_b.py    MedSAM ViT-B encoder with fused attention (GPU)
  fast_decoder.py  inference-optimised prompt decoder
  models.py        build and load a network for a registry entry
  device.py        CUDA / MPS / CPU choice and the dtype policy
"""
