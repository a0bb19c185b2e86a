"""A thread-safe LRU cache of image embeddings, bounded in bytes, and the key of a slice in it."""

import hashlib
import threading
from collections import OrderedDict


def content_key(spec, image):
    """The cache key of a windowed uint8 slice for the model `spec` (a registry entry).

    Content-addressed: the same pixels give the same key, whatever node or file they came from,
    so a slice pre-encoded in the background is found by a propagation or a one-slice preview.
    """
    return (spec.name, spec.image_size, image.shape, hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest())


class EmbeddingCache:
    def __init__(self, max_bytes):
        self.max_bytes = int(max_bytes)
        self._items = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _size(tensor):
        return tensor.numel() * tensor.element_size()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def __contains__(self, key):
        with self._lock:
            return key in self._items

    def put(self, key, tensor):
        size = self._size(tensor)
        with self._lock:
            if key in self._items:
                self._bytes -= self._size(self._items.pop(key))
            if size > self.max_bytes:
                return  # a budget smaller than one embedding disables caching
            self._items[key] = tensor
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= self._size(old)

    def put_if_room(self, key, tensor, reserve_bytes=0):
        """Store without evicting anything, keeping `reserve_bytes` free; False when it does not fit.

        For speculative work (background pre-encoding): it must never push out an embedding that
        someone encoded because they needed it."""
        size = self._size(tensor)
        with self._lock:
            if key in self._items:
                return True
            if self._bytes + size + reserve_bytes > self.max_bytes:
                return False
            self._items[key] = tensor
            self._bytes += size
            return True

    def free_bytes(self):
        with self._lock:
            return max(0, self.max_bytes - self._bytes)

    def clear(self):
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self):
        return self._bytes

    def __len__(self):
        return len(self._items)
