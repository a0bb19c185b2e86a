"""Slice embeddings kept on disk between benchmark runs, one file per volume.

The predictor's cache is keyed by slice content, so a file written by one script (or one grid
of robustness.py) is found by any other that windows the same pixels the same way.
"""

from pathlib import Path


def slice_keys(pred, image, window, axis="k"):
    from MedSAMSegmentLib.engine.propagation import _SliceSource

    source = _SliceSource(pred, image, window, axis)
    return [source.key(k) for k in range(image.shape["kji".index(axis)])]


def load(pred, path, keys):
    """Put the stored embeddings of `keys` into the predictor's cache (none if path is None)."""
    import torch

    if path is not None and Path(path).exists():
        stored = torch.load(path)
        for key in keys:
            if key in stored:
                pred.cache.put(key, stored[key])


def save(pred, path, keys):
    """Write the cached embeddings of `keys` to path (nothing if path is None)."""
    import torch

    if path is not None:
        found = {key: pred.cache.get(key) for key in keys}
        torch.save({k: v for k, v in found.items() if v is not None}, path)
