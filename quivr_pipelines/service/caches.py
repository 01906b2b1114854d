"""A bounded, thread-safe LRU cache with a time-to-live (query vectors and query results)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

_MISSING = object()


class TTLCache:
    def __init__(self, max_entries: int, ttl_seconds: float):
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, default=None):
        if self.max_entries <= 0:
            return default
        now = time.monotonic()
        with self._lock:
            entry = self._items.get(key, _MISSING)
            if entry is _MISSING or entry[0] < now:
                if entry is not _MISSING:
                    del self._items[key]
                self.misses += 1
                return default
            self._items.move_to_end(key)
            self.hits += 1
            return entry[1]

    def set(self, key: Hashable, value: Any) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
