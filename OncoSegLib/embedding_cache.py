"""A lazy LRU cache of slice embeddings, keyed by (axis, slice index, preprocessing key), capped in megabytes.

A slice is encoded the first time it is asked for and at most once while it stays cached; the least recently used
entries are dropped when the cap is exceeded (an entry larger than the whole cap is returned but not kept).
Counters (``hits``, ``misses``, ``encodes``, ``evictions``) make the "encoded at most once" promise testable.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

from OncoSegLib.models.predictor import ImageEmbeddings


@dataclass(frozen=True)
class CacheKey:
    """Identity of one encoded slice: slicing ``axis``, slice ``index`` and the ``prep`` key (normaliser + model)."""

    axis: str
    index: int
    prep: Hashable


class _Pending:
    """An encode in progress: waiters block on ``done``; ``result`` is set on success."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: ImageEmbeddings | None = None


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    encodes: int = 0
    evictions: int = 0


class EmbeddingCache:
    """LRU of :class:`ImageEmbeddings` with a byte cap.

    Args:
        capacity_mb: cap on the bytes of cached tracker maps (MiB); 0 disables caching (every get encodes).
    """

    def __init__(self, capacity_mb: float = 512.0):
        if capacity_mb < 0:
            raise ValueError("capacity_mb must be >= 0")
        self.capacity_bytes = int(capacity_mb * 1024 * 1024)
        self._items: "OrderedDict[CacheKey, ImageEmbeddings]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self.stats = CacheStats()
        self.encoded_keys: dict[CacheKey, int] = {}  # key -> number of times it was encoded (for tests/bench)
        self._pending: dict[CacheKey, _Pending] = {}

    # ------------------------------------------------------------------ queries
    def __contains__(self, key: CacheKey) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._bytes

    def keys(self) -> list[CacheKey]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._items)

    # ------------------------------------------------------------------ access
    def get(self, key: CacheKey, encode: Callable[[], ImageEmbeddings]) -> ImageEmbeddings:
        """The embeddings of ``key``: from the cache (a hit) or by calling ``encode()`` once (a miss).

        Thread-safe: while one thread encodes ``key``, other threads asking for it wait for that result instead of
        encoding the slice again (the lock is not held during the encode, so other keys proceed).
        """
        while True:
            with self._lock:
                item = self._items.get(key)
                if item is not None:
                    self._items.move_to_end(key)
                    self.stats.hits += 1
                    return item
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = _Pending()
                    self.stats.misses += 1
                    break
            pending.done.wait()  # another thread is encoding this slice
            if pending.result is not None:
                with self._lock:
                    self.stats.hits += 1
                return pending.result
            # that encode failed, or its result was too large to keep: try again (possibly encoding here)
        try:
            emb = encode()
            self.put(key, emb, _count_encode=True)
            pending.result = emb
            return emb
        finally:
            with self._lock:
                self._pending.pop(key, None)
            pending.done.set()

    def put(self, key: CacheKey, emb: ImageEmbeddings, _count_encode: bool = True) -> None:
        """Store embeddings computed elsewhere (e.g. while running a text prompt); counts as one encode."""
        emb = emb.tracker_only()
        size = emb.nbytes
        with self._lock:
            if _count_encode:
                self.stats.encodes += 1
                self.encoded_keys[key] = self.encoded_keys.get(key, 0) + 1
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if size > self.capacity_bytes:
                return
            self._items[key] = emb
            self._bytes += size
            while self._bytes > self.capacity_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
                self.stats.evictions += 1

    def invalidate(self, prep: Hashable | None = None) -> None:
        """Drop every entry (``prep`` None) or those made with preprocessing key ``prep``."""
        with self._lock:
            for k in [k for k in self._items if prep is None or k.prep == prep]:
                self._bytes -= self._items.pop(k).nbytes

    def clear(self) -> None:
        """Drop everything and reset the counters."""
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.stats = CacheStats()
            self.encoded_keys.clear()


__all__ = ["EmbeddingCache", "CacheKey", "CacheStats"]
