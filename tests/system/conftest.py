"""The system test's terminal summary: its recovery table in ``make test`` output (no ``-s``
needed)."""

from __future__ import annotations

import pytest

from tests.system.load import REPORT_LINES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The system test's report (recovery per fault, findings) at the end of the run."""
    if REPORT_LINES:
        terminalreporter.section("system test: production topology under faults")
        for line in REPORT_LINES:
            terminalreporter.write_line(line)
