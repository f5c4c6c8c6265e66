"""Progress of a long command on stderr, in counts only (never a value): a tqdm bar with an ETA on
a terminal, plain lines otherwise. The key rotations and the file tools show theirs with it."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tqdm import tqdm

#: ``auto``: a bar on a terminal, else plain lines
MODES = ("auto", "bar", "lines", "none")


class Progress:
    """The progress of one piece of work (a key rotation, a file), told by :meth:`update`.

    As a bar (``mode="bar"``, or ``"auto"`` on a terminal): ``done`` of ``total`` in ``unit``
    with the rate and an ETA (when ``total`` is known), and the ``postfix`` of the last update.
    As plain lines (``"lines"``, or ``"auto"`` elsewhere): the text ``describe(progress)`` makes,
    at most every ``interval`` seconds, and with ``bookends`` also at the first update and when
    closed. ``"none"`` shows nothing.

    Args:
        label: the bar's description (plain lines say it through ``describe``).
        describe: the plain line, from :attr:`done`, :attr:`total`, :attr:`counts` and
            :attr:`elapsed`.
        total: the amount of work in ``unit``, when known (an update may give it later).
        unit: what ``done`` counts; ``unit_scale`` shows it with k/M/G prefixes of 1024 (bytes).
    """

    def __init__(
        self,
        label: str,
        describe: Callable[[Progress], str],
        *,
        total: int | None = None,
        unit: str,
        unit_scale: bool = False,
        mode: str = "auto",
        interval: float,
        bookends: bool = False,
        stream: IO[str] | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        #: what the last update said besides ``done`` (rows, values, bytes of a file)
        self.counts: dict[str, int] = {}
        self._describe = describe
        self._interval = interval
        self._bookends = bookends
        self._stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if self._stream.isatty() else "lines"
        self.mode = mode
        self._start = self._last = time.monotonic()
        self._bar: Any = self._new_bar(unit, unit_scale) if mode == "bar" else None

    def _new_bar(self, unit: str, unit_scale: bool) -> Any:
        # a terminal that reports no width (a fresh pty, some CI runners) would get an empty
        # bar: assume 100 columns there
        try:
            ncols = os.get_terminal_size(self._stream.fileno()).columns or 100
        except (OSError, ValueError, io.UnsupportedOperation):
            ncols = 100
        return tqdm(
            total=self.total,
            desc=self.label,
            unit=unit,
            unit_scale=unit_scale,
            unit_divisor=1024,
            file=self._stream,
            mininterval=0.5,
            ncols=ncols,
        )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def update(
        self, done: int, total: int | None = None, *, postfix: str | None = None, **counts: int
    ) -> None:
        """Cumulative ``done`` (and ``total`` when it became known) after a batch, with the
        ``counts`` a plain line shows and the bar's ``postfix``."""
        if total is not None:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        first = self.done == 0
        if self._bar is not None:
            self._bar.update(done - self.done)
            if postfix is not None:
                self._bar.set_postfix_str(postfix, refresh=False)
        self.done = done
        self.counts.update(counts)
        now = time.monotonic()
        if self.mode == "lines" and (
            (self._bookends and first) or now - self._last >= self._interval
        ):
            self._last = now
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self._bookends and self.done:
            self._line()

    def _line(self) -> None:
        self._stream.write(self._describe(self) + "\n")
        self._stream.flush()
