"""A thread-safe LRU cache of encoded chunks, bounded in bytes.

Chunks are encoded independently (each is its own 77-token sequence), so a chunk's hidden states depend
only on the tower, its weights, the selected layer and the chunk's tokens. Caching per chunk means an
edited long prompt re-encodes only the chunks that changed, and the empty-prompt row used by ComfyUI's
weighting is computed once.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict, deque

import torch

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
_CACHES: "weakref.WeakSet[ByteLRUCache]" = weakref.WeakSet()


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


class ByteLRUCache:
    """Maps hashable keys to tensors (or tuples of them); evicts least recently used past ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        # Models that went away (see forget()): appended without the lock, dropped at the next use.
        self._forgotten: deque = deque()
        _CACHES.add(self)

    @property
    def nbytes(self) -> int:
        with self._lock:  # put() passes the bound for a moment before it evicts: never show that state
            self._drop_forgotten()
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            self._drop_forgotten()
            return len(self._items)

    def _drop_forgotten(self) -> None:
        while self._forgotten:
            owned = _owned_by(self._forgotten.popleft())
            for key in [k for k in self._items if owned(k)]:
                del self._items[key]
                self._bytes -= self._sizes.pop(key)

    def get(self, key):
        """The cached value or None (and mark it recently used)."""
        with self._lock:
            self._drop_forgotten()
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key, value) -> None:
        """Store ``value``; a value larger than the whole bound is not stored."""
        size = _nbytes(value)
        with self._lock:
            self._drop_forgotten()
            if key in self._items:
                self._bytes -= self._sizes.pop(key)
                del self._items[key]
            if size > self.max_bytes:
                return
            self._items[key] = value
            self._sizes[key] = size
            self._bytes += size
            while self._bytes > self.max_bytes:
                old, _ = self._items.popitem(last=False)
                self._bytes -= self._sizes.pop(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self._bytes = 0

    def drop_where(self, predicate) -> None:
        """Remove every entry whose key satisfies ``predicate`` (e.g. a model that was unloaded)."""
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                del self._items[key]
                self._bytes -= self._sizes.pop(key)


def _owned_by(cache_id: str):
    prefix = cache_id + ":"

    def owned(key) -> bool:
        head = key[0] if isinstance(key, tuple) and key else None
        return isinstance(head, str) and (head == cache_id or head.startswith(prefix))

    return owned


def forget(cache_id: str) -> None:
    """Drop, from every cache, the entries of a model that is gone: keys whose first item is ``cache_id``
    or starts with ``cache_id + ":"`` (a host's per-patch-set ids under one model).

    Safe in a garbage-collection finalizer: it takes no lock (a collection may run while a cache holds
    its lock); each cache drops the entries at its next use."""
    for cache in list(_CACHES):
        cache._forgotten.append(cache_id)


CHUNK_CACHE = ByteLRUCache()
