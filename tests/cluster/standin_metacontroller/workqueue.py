"""A de-duplicating work queue with delayed adds and per-key exponential backoff (client-go style).

A key is queued at most once; a key added while it is being processed is processed again after
``done``. ``add_after`` schedules a key; ``add_rate_limited`` schedules it after 5 ms doubling per
consecutive failure, capped at ``max_backoff_s``; ``forget`` resets the failure count.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Hashable

BASE_BACKOFF_S = 0.005


class WorkQueue:
    def __init__(self, max_backoff_s: float = 30.0, clock=time.monotonic):
        self._clock = clock
        self._max_backoff_s = max_backoff_s
        self._cond = threading.Condition()
        self._ready: list[Hashable] = []
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._closed = False

    def add(self, key: Hashable) -> None:
        with self._cond:
            if self._closed:
                return
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
                self._cond.notify()

    def add_after(self, key: Hashable, delay_s: float) -> None:
        if delay_s <= 0:
            self.add(key)
            return
        with self._cond:
            heapq.heappush(self._delayed, (self._clock() + delay_s, next(self._seq), key))
            self._cond.notify()

    def add_rate_limited(self, key: Hashable) -> float:
        with self._cond:
            delay = min(self._max_backoff_s, BASE_BACKOFF_S * 2 ** min(self._failures.get(key, 0), 40))
            self._failures[key] = self._failures.get(key, 0) + 1
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def _promote_due(self) -> float | None:
        """Move due delayed keys to ready; seconds until the next one (None if none)."""
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
        return self._delayed[0][0] - now if self._delayed else None

    def get(self, timeout_s: float | None = None) -> Hashable | None:
        """The next key (now processing), or None on close/timeout."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        with self._cond:
            while True:
                if self._closed:
                    return None
                wait = self._promote_due()
                if self._ready:
                    key = self._ready.pop(0)
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._ready.append(key)
                    self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._delayed)
