"""A caller's deadline, carried from the gRPC context down to key-server retries."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point on the monotonic clock after which work for this call is pointless."""

    expires_at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def from_remaining(cls, remaining: float | None, default: float = 30.0) -> Deadline:
        """From gRPC's ``context.time_remaining()`` (None when the client set no deadline)."""
        return cls.after(default if remaining is None else remaining)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at
