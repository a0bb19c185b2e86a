"""A thread-safe LRU cache of image embeddings, bounded in bytes."""

import threading
from collections import OrderedDict


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

    def clear(self):
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self):
        return self._bytes

    def __len__(self):
        return len(self._items)
