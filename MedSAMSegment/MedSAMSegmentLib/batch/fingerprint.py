"""What an output depends on, as one hash: the image's bytes, the row's parameters, the ROI's
bytes, the model and its weights' checksum, and this project's version.

A re-run compares it with the one recorded for the output (ledger.py) and skips the row when
they match. File hashes are remembered per (path, size, mtime) within a process, so rows on one
image hash it once.
"""

import hashlib
import json
import os
import threading

from .. import __version__

_HASHES = {}
_LOCK = threading.Lock()


def file_sha256(path):
    """sha256 of a file's bytes; remembered while its size and modification time stay the same."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        known = _HASHES.get(key)
    if known is None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        known = digest.hexdigest()
        with _LOCK:
            _HASHES[key] = known
    return known


def weights_sha256(model, checkpoint=None):
    """(checkpoint path, sha256) of the weights a model would load, without loading them."""
    from ..model.weights import resolve_checkpoint

    path = resolve_checkpoint(model, checkpoint=checkpoint)
    return str(path), file_sha256(path)


def _digest(document):
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()


def row_fingerprint(row, weights_hash, precision="auto"):
    """Fingerprint of one row's output (raises OSError if an input file cannot be read)."""
    return _digest({
        "project": __version__,
        "image": file_sha256(row.image),
        "roi": file_sha256(row.roi) if row.roi else None,
        "parameters": row.parameters(),
        "weights": weights_hash,
        "precision": precision,
    })


def combined_fingerprint(fingerprints):
    """One fingerprint for a file holding several rows (--group-by-image)."""
    return _digest(sorted(fingerprints))
