"""A caller's deadline and whether the caller is still there, carried from the gRPC context
down to the service's long loops and the key-server retries."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vault.errors import Cancelled, DeadlineExceeded


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point on the monotonic clock after which work for this call is pointless, and a
    callback saying whether the caller cancelled it (the gRPC context's, in a server)."""

    expires_at: float
    cancelled: Callable[[], bool] = field(default=_never, repr=False, compare=False)

    @classmethod
    def after(cls, seconds: float, *, cancelled: Callable[[], bool] = _never) -> Deadline:
        return cls(time.monotonic() + seconds, cancelled)

    @classmethod
    def from_remaining(
        cls,
        remaining: float | None,
        default: float = 30.0,
        *,
        cancelled: Callable[[], bool] = _never,
    ) -> Deadline:
        """From gRPC's ``context.time_remaining()`` (None when the client set no deadline)."""
        return cls.after(default if remaining is None else remaining, cancelled=cancelled)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at

    def check(self) -> None:
        """Stop here if the call's work is no longer wanted: for long loops to call between
        units of work (texts, detectors), before anything is written. About a microsecond.

        Raises:
            Cancelled: the caller cancelled the call (or the server is stopping).
            DeadlineExceeded: the deadline passed.
        """
        if self.cancelled():
            raise Cancelled("the call was cancelled")
        if self.expired():
            raise DeadlineExceeded("the call's deadline passed")
