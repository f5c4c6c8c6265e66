"""How fast an operator operation goes: at most so many units a second, counted from its start."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pace:
    """Sleeps between batches so that ``done`` units never run ahead of ``max_per_second``
    (None or 0: as fast as it goes)."""

    def __init__(
        self,
        max_per_second: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._max = max_per_second
        self._clock = clock
        self._sleep = sleep
        self._started = clock()

    def wait(self, done: int) -> None:
        """After a batch: sleep until ``done`` units are no longer ahead of the pace."""
        if self._max:
            ahead = done / self._max - (self._clock() - self._started)
            if ahead > 0:
                self._sleep(ahead)
