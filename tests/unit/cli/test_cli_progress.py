"""The one progress display of the CLI: plain lines paced by the interval (with a first and a
last line for key rotations), a tqdm bar when asked or on a terminal, nothing with ``none``; and
the lines the key rotations and the file tools print through it."""

from __future__ import annotations

import io
import re

import pytest

from vault.cli import files, keys
from vault.cli.progress import Progress


def _counts(progress: Progress) -> str:
    return f"{progress.label}: {progress.done}/{progress.total}"


def _lines(*, interval: float, bookends: bool, mode: str = "lines") -> tuple[Progress, io.StringIO]:
    stream = io.StringIO()
    progress = Progress(
        "work",
        _counts,
        total=10,
        unit=" keys",
        mode=mode,
        interval=interval,
        bookends=bookends,
        stream=stream,
    )
    return progress, stream


def test_lines_with_bookends_say_the_first_batch_and_the_end_and_nothing_between() -> None:
    progress, stream = _lines(interval=3600, bookends=True)
    for done in (2, 4, 6):
        progress.update(done)
    progress.close()
    assert stream.getvalue() == "work: 2/10\nwork: 6/10\n"


def test_lines_without_bookends_come_only_every_interval() -> None:
    progress, stream = _lines(interval=3600, bookends=False)
    progress.update(5)
    progress.close()
    assert stream.getvalue() == ""

    progress, stream = _lines(interval=0, bookends=False)
    progress.update(5)
    progress.update(10)
    progress.close()
    assert stream.getvalue() == "work: 5/10\nwork: 10/10\n"


def test_an_update_can_give_the_total_later_and_counts_beside_done() -> None:
    progress, _ = _lines(interval=3600, bookends=False)
    progress.update(3, 30, rows=7)
    assert (progress.done, progress.total, progress.counts) == (3, 30, {"rows": 7})


def test_none_shows_nothing_and_auto_is_lines_off_a_terminal() -> None:
    progress, stream = _lines(interval=0, bookends=True, mode="none")
    progress.update(5)
    progress.close()
    assert stream.getvalue() == ""
    assert _lines(interval=0, bookends=True, mode="auto")[0].mode == "lines"


def test_a_bar_is_drawn_in_place_with_its_postfix() -> None:
    progress, stream = _lines(interval=0, bookends=True, mode="bar")
    progress.update(5, postfix="5 rows")
    progress.close()
    text = stream.getvalue()
    assert "\r" in text
    assert re.search(r"work: +50%\|.*5/10 .*, 5 rows\]", text), text
    assert "work: 5/10" not in text  # no plain lines beside a bar


def test_a_key_rotation_line_has_the_count_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    progress = keys._key_progress("rotate-field email", None)
    progress.update(5, 20)
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"  rotate-field email: 5/20 keys, \d+ keys/s, ETA \d+ s", lines[0])
    assert re.fullmatch(r"  rotate-field email: 5/20 keys, \d+ keys/s, ETA \d+ s", lines[1])


def test_a_file_line_has_rows_values_size_share_rate_and_eta() -> None:
    progress = Progress("cvault tokenize-file", lambda p: "", unit="B", interval=0)
    progress.update(2048, rows=10, values=20, bytes=2048)
    progress.total = 4096
    assert re.fullmatch(
        r"cvault tokenize-file: 10 rows, 20 values, 2\.0 KiB of 4\.0 KiB \(50%\), \d+ rows/s, "
        r"ETA \d+:\d\d:\d\d",
        files._file_line(progress, "values"),
    )
    progress.total = None
    assert re.fullmatch(
        r"cvault tokenize-file: 10 rows, 20 tokens, 2\.0 KiB, \d+ rows/s",
        files._file_line(progress, "tokens"),
    )
