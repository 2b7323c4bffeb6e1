"""The client-side rate limit: paced starts, a hard cap per second, and the hold-back after a 429.

The limit is per process: every client in one process that talks to the same account shares one
limiter, but each Airflow task try and the triggerer are separate processes with limiters of
their own. Set ``max_requests_per_second`` so that the processes that may run at once stay under
Stripe's limit together.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_REQUESTS_PER_SECOND", "RATE_LIMIT_PENALTY", "RateLimiter"]

# After a 429, no request of the process through the same limiter starts for this long.
RATE_LIMIT_PENALTY = 1.0
# Stripe's test mode allows 25 reads/s; stay safely under it unless the connection says otherwise.
DEFAULT_MAX_REQUESTS_PER_SECOND = 20.0


class RateLimiter:
    """At most ``rate`` request starts in any 1-second window (in fact 5 % fewer, see ``HEADROOM``),
    across threads and event loops, in this process.

    Two parts. Pacing: each caller reserves the next free slot, ``1 / rate`` after the previous
    one, under a lock, then waits for it (``time.sleep`` in a thread, ``asyncio.sleep`` in a
    trigger). The guarantee: a sleeper can wake late and the next one on time, so right before
    sending each caller also checks the actual start times of the last ``rate`` requests and waits
    until the oldest is a full second (plus a little slack for network jitter) in the past.

    A 429 (:meth:`penalize`) holds back every request not yet on the wire: the check right before
    sending refuses any start until the hold-back is over, so callers that reserved a slot before
    the 429 wait too, and start after it no faster than paced callers.
    """

    # Extra spacing on top of one second, for requests that arrive at Stripe unevenly delayed:
    # between the recorded start and the arrival, 2 to 22 ms on a loaded 2-core machine, more
    # while it is starved; 10 ms let 11 or 12 requests into one of the server's seconds.
    WINDOW_SLACK = 0.05
    # Requests that may start together before pacing spaces them out.
    BURST = 4
    # Share of the configured rate kept free: requests reach Stripe with uneven delays (measured up
    # to 170 ms on a loaded machine), which can bunch a few more into one of Stripe's seconds.
    HEADROOM = 0.05

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._next_free = 0.0
        self._held_until = 0.0
        self._starts: collections.deque[float] = collections.deque()
        self.rate = rate

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"max_requests_per_second must be a positive number, got {value!r}.")
        with self._lock:
            self._rate = float(value)
            effective = self._rate * (1.0 - self.HEADROOM)
            self._interval = 1.0 / effective
            self._window_size = max(1, math.floor(effective))
            self._burst_tolerance = (min(self.BURST, self._window_size) - 1) * self._interval
            self._starts = collections.deque(self._starts, maxlen=self._window_size)

    def reserve(self) -> float:
        """Claim the next paced slot; return how many seconds to wait before using it.

        Pacing lets a short burst (``BURST`` requests) through at once, so a task's few sequential
        calls are not spaced ``1 / rate`` apart; the window check still caps every second.
        """
        with self._lock:
            now = self._clock()
            next_free = max(self._next_free, now)
            self._next_free = next_free + self._interval
            return max(0.0, next_free - self._burst_tolerance - now)

    def _try_start(self) -> float:
        """Record a start now and return 0, or return how long to wait before asking again: for
        a 429 hold-back to end, for the burst to be paced, or for the 1-second window to allow it."""
        with self._lock:
            now = self._clock()
            if now < self._held_until:
                return self._held_until - now
            starts = self._starts
            # Requests whose paced slot passed while they queued for a thread (or a hold-back)
            # would all start together; a burst of threads reaches Stripe spread by the GIL, and
            # the next wave, timed from the burst's start times, lands in the same second as its
            # stragglers. So at most BURST starts per BURST paced intervals here too.
            burst = min(self.BURST, self._window_size)
            waits = [0.0]
            if len(starts) >= burst:
                waits.append(starts[-burst] + burst * self._interval - now)
            if len(starts) >= self._window_size:
                waits.append(starts[0] + 1.0 + self.WINDOW_SLACK - now)
            wait = max(waits)
            if wait > 0:
                return wait
            starts.append(now)
            return 0.0

    def acquire(self) -> None:
        """Wait, in this thread, for a paced slot and then for the window; record the start."""
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)
        self.wait_for_window()

    def wait_for_window(self) -> None:
        """The check right before sending alone: record a start now, or sleep until the hold-back
        and the 1-second window allow one."""
        while (delay := self._try_start()) > 0:
            time.sleep(delay)

    async def pace_async(self) -> None:
        """The pacing alone, awaited in an event loop. The thread that finally sends must call
        :meth:`wait_for_window` right before it starts: a busy pool can start the request late."""
        import asyncio

        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    async def acquire_async(self) -> None:
        """:meth:`acquire` awaited in an event loop."""
        import asyncio

        await self.pace_async()
        while (delay := self._try_start()) > 0:
            await asyncio.sleep(delay)

    def penalize(self, seconds: float = RATE_LIMIT_PENALTY) -> None:
        """Hold back every request not yet on the wire for ``seconds`` after Stripe answered 429."""
        with self._lock:
            now = self._clock()
            self._held_until = max(self._held_until, now + seconds)
            self._next_free = max(self._next_free, now + seconds + self._burst_tolerance)
