"""A sliding one-second window over accepted requests, like a strict provider-side rate limit.

A request arriving at ``t`` is refused when ``limit`` requests were already accepted in ``(t - 1, t]``. Unlike
a token bucket there is no burst credit: a client that paces itself at exactly ``limit`` per second never
sees a 429, and one that bursts does. The window also yields ``max_in_any_window``, which benchmarks use to
check a client's pacing even when the limit is switched off.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW_S = 1.0


class SlidingWindow:
    """Accepted-request timestamps of the last second; ``limit`` 0 means count but never refuse."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._accepted: deque[float] = deque()
        self.max_in_any_window = 0

    def _expire(self, now: float) -> None:
        horizon = now - WINDOW_S
        while self._accepted and self._accepted[0] <= horizon:
            self._accepted.popleft()

    def wait_time(self, now: float) -> float | None:
        """Seconds until a request at ``now`` would be accepted, or None if it would be accepted now."""
        self._expire(now)
        if self.limit <= 0 or len(self._accepted) < self.limit:
            return None
        # The slot frees once the oldest of the last `limit` acceptances leaves the window.
        return self._accepted[-self.limit] + WINDOW_S - now

    def accept(self, now: float) -> None:
        """Record an accepted request. The max over windows ending at acceptances is the max over all."""
        self._expire(now)
        self._accepted.append(now)
        self.max_in_any_window = max(self.max_in_any_window, len(self._accepted))

    def try_acquire(self, now: float) -> float | None:
        """Accept the request and return None, or refuse it and return the wait; refusals are not recorded."""
        wait = self.wait_time(now)
        if wait is None:
            self.accept(now)
        return wait

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        """Retry-After is whole seconds; round up so a client that obeys it is never refused again for pace."""
        return str(max(1, math.ceil(wait_s)))
