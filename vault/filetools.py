"""``cvault tokenize-file`` and ``cvault reveal-file``: tokenize or reveal chosen fields of JSON
Lines and CSV files for pipelines that do not speak gRPC, streaming in batches.

Streaming: the input is read one line at a time (a line may be at most ``MAX_LINE_BYTES``), rows
are held only until their batch of values has been sent (``--batch`` values, ``--batch`` rows or
``MAX_PENDING_BYTES`` of values, whichever comes first), then written out in order. Memory is
bounded by the batch, never by the file.

What is kept exactly:

* JSON Lines: each line is scanned, not re-serialized. Only the text of a chosen top-level key's
  value is replaced (by a JSON string, UTF-8, minimal escaping); every other byte of the line,
  its other keys, spacing, number forms and line ending, is written back untouched. Lines that
  are empty or whitespace only pass through.
* CSV (the ``csv`` module, ``strict``): the header line is copied as it was; a row with no
  changed cell is copied as it was; a changed row is written by ``csv.writer`` (minimal quoting,
  the line ending of the header line), so a file written by ``csv.writer`` round-trips byte for
  byte.

Empty cells, missing keys and JSON ``null`` are left as they are. Error messages name the line
(the first line of a CSV record) and the field, never a value; progress lines carry counts only.
The output is written to a temporary file next to OUT (mode 0600: it may hold plaintext) and
renamed over OUT only on success, so a failure leaves no partial file; an existing OUT keeps its
mode. With ``-`` the output goes to stdout as it is produced.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
import stat
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vault.client import VaultClient

#: values per Tokenize / tokens per Reveal call (``--batch``); the server takes at most 10,000
DEFAULT_BATCH = 1000
MAX_BATCH = 10_000
#: longest input line. Rows wait in memory for their batch, so this times the batch bounds the
#: memory used; 16 MiB leaves room for wide JSON lines (embeddings, documents) beside the values.
MAX_LINE_BYTES = 16 * 1024 * 1024
#: a batch is sent early once its values reach this size, keeping gRPC messages (32 MiB at most)
#: and memory small when cells are long (free text)
MAX_PENDING_BYTES = 8 * 1024 * 1024
#: seconds between plain progress lines when stderr is not a terminal (``--progress-interval``)
DEFAULT_PROGRESS_INTERVAL = 10.0
KINDS = ("random", "deterministic", "format_preserving")
FORMATS = ("jsonl", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv"}
_ITEM_FIELD = re.compile(r"items\[(\d+)\]\.(\w+)")


class FileInputError(Exception):
    """Bad input: names the line and the field, never the value."""

    def __init__(self, line: int | None, problem: str, field_name: str | None = None) -> None:
        where = [f"line {line}"] if line is not None else []
        if field_name is not None:
            where.append(f"field {field_name!r}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)


class UsageError(Exception):
    """Bad options (exit status 2)."""


# --- choosing the fields ---------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The chosen fields: name -> field class (empty when the class does not matter).

    ``by_schema``: chosen as "every column/key that is a field of the record schema", so a CSV
    without some of them is fine; chosen by ``--fields``, every name must be a column.
    """

    classes: Mapping[str, str]
    by_schema: bool

    def class_of(self, name: str) -> str | None:
        return self.classes.get(name)


def parse_selection(
    fields: str | None, use_schema: bool, schema_file: str | None, *, need_classes: bool
) -> Selection:
    """The fields chosen by ``--fields NAME[:CLASS],...`` or ``--schema``.

    Args:
        fields: the ``--fields`` text, or None with ``use_schema``.
        use_schema: ``--schema``: every field of the record schema.
        schema_file: the record schema (None: $CVAULT_SCHEMA, else the packaged default).
        need_classes: a class is needed for every name (tokenize); a name without one takes
            its schema field's class.

    Raises:
        UsageError: an empty list, a repeated name, an unknown class, a name the schema does not
            know given without a class, or a schema file that does not load.
    """
    from vault.errors import ConfigError
    from vault.schema import FieldClass, RecordSchema, load_schema

    loaded: list[RecordSchema] = []

    def schema() -> RecordSchema:
        if not loaded:
            path = schema_file or os.environ.get("CVAULT_SCHEMA") or None
            try:
                loaded.append(load_schema(path))
            except ConfigError as exc:
                raise UsageError(f"record schema: {exc.message}") from None
        return loaded[0]

    if use_schema:
        return Selection(
            {name: spec.field_class.value for name, spec in schema().fields.items()}, True
        )
    known = {c.value for c in FieldClass}
    classes: dict[str, str] = {}
    for part in (fields or "").split(","):
        name, sep, cls = (s.strip() for s in part.strip().partition(":"))
        if not name and not sep:
            continue
        if not name:
            raise UsageError("--fields: an entry has a class but no field name")
        if name in classes:
            raise UsageError(f"--fields: field {name!r} is named twice")
        if sep:
            if cls not in known:
                raise UsageError(
                    f"--fields: field {name!r}: unknown class {cls!r} "
                    f"(known: {', '.join(sorted(known))})"
                )
        elif need_classes:
            spec = schema().fields.get(name)
            if spec is None:
                raise UsageError(
                    f"--fields: field {name!r} is not in the record schema "
                    f"({schema().source}); give its class, e.g. {name}:email"
                )
            cls = spec.field_class.value
        classes[name] = cls
    if not classes:
        raise UsageError("--fields: name at least one field")
    return Selection(classes, False)


# --- rows ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Cell:
    """One chosen, non-empty value of a row; ``new`` is what replaces it (None: keep it)."""

    name: str
    value: str = field(repr=False)
    field_class: str
    new: str | None = field(default=None, repr=False)

    @property
    def changed(self) -> bool:
        return self.new is not None and self.new != self.value


class Row(Protocol):
    line: int
    cells: list[Cell]

    def render(self) -> str: ...


@dataclass(slots=True)
class JsonRow:
    """A JSON Lines line and the spans (in ``text``) of its chosen values."""

    line: int
    text: str = field(repr=False)
    cells: list[Cell]
    spans: list[tuple[int, int]]

    def render(self) -> str:
        parts: list[str] = []
        pos = 0
        for cell, (start, end) in zip(self.cells, self.spans, strict=True):
            if cell.changed:
                parts += [self.text[pos:start], json.dumps(cell.new, ensure_ascii=False)]
                pos = end
        if not parts:
            return self.text
        parts.append(self.text[pos:])
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class CsvDialect:
    delimiter: str
    lineterminator: str


@dataclass(slots=True)
class CsvRow:
    """A CSV record as read (``raw``, possibly several lines) and as parsed."""

    line: int
    raw: str = field(repr=False)
    values: list[str] = field(repr=False)
    cells: list[Cell]
    columns: list[int]
    dialect: CsvDialect

    def render(self) -> str:
        if not any(c.changed for c in self.cells):
            return self.raw
        out = list(self.values)
        for cell, column in zip(self.cells, self.columns, strict=True):
            if cell.changed:
                assert cell.new is not None
                out[column] = cell.new
        buf = io.StringIO()
        term = self.dialect.lineterminator
        csv.writer(buf, delimiter=self.dialect.delimiter, lineterminator=term).writerow(out)
        text = buf.getvalue()
        # the file's last line may have had no line ending: do not add one
        return text if self.raw.endswith(("\n", "\r")) else text[: -len(term)]


class LineReader:
    """Decoded lines of a binary stream, one at a time, counting lines and bytes."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.line = 0
        self.bytes = 0

    def __iter__(self) -> Iterator[str]:
        while True:
            raw = self._stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            self.line += 1
            if len(raw) > MAX_LINE_BYTES:
                raise FileInputError(self.line, f"line longer than {MAX_LINE_BYTES} bytes")
            self.bytes += len(raw)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                raise FileInputError(self.line, "not UTF-8 text") from None


def _checked_value(value: object, line: int, name: str) -> str | None:
    """A chosen value to process, or None to leave it (null, empty)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        kind = {bool: "a boolean", int: "a number", float: "a number", list: "an array"}.get(
            type(value), "an object"
        )
        raise FileInputError(line, f"expected a string, got {kind}", name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FileInputError(line, "not valid Unicode (a lone surrogate escape)", name) from None
    return value


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip(text: str, i: int) -> int:
    """The index of the first non-whitespace character (JSON whitespace) at or after ``i``."""
    m = _WS.match(text, i)
    return m.end() if m else i


def _json_row(text: str, line: int, selection: Selection) -> JsonRow:
    """Scan one line's top-level object, noting where each chosen key's value is."""

    def fail(problem: str, pos: int | None = None) -> FileInputError:
        at = f" at column {pos + 1}" if pos is not None else ""
        return FileInputError(line, f"invalid JSON: {problem}{at}")

    cells: list[Cell] = []
    spans: list[tuple[int, int]] = []
    seen: set[str] = set()
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        raise FileInputError(line, "not a JSON object")
    i = _skip(text, i + 1)
    try:
        if text[i : i + 1] == "}":
            i += 1
        else:
            while True:
                if text[i : i + 1] != '"':
                    raise fail("expecting a key in double quotes", i)
                key, i = json.decoder.scanstring(text, i + 1, True)  # type: ignore[attr-defined]
                i = _skip(text, i)
                if text[i : i + 1] != ":":
                    raise fail("expecting ':'", i)
                i = _skip(text, i + 1)
                value, end = _DECODER.raw_decode(text, i)
                field_class = selection.class_of(key)
                if field_class is not None:
                    if key in seen:
                        raise FileInputError(line, "key appears twice", key)
                    seen.add(key)
                    chosen = _checked_value(value, line, key)
                    if chosen is not None:
                        cells.append(Cell(key, chosen, field_class))
                        spans.append((i, end))
                i = _skip(text, end)
                sep = text[i : i + 1]
                if sep == "}":
                    i += 1
                    break
                if sep != ",":
                    raise fail("expecting ',' or '}'", i)
                i = _skip(text, i + 1)
    except json.JSONDecodeError as exc:
        # exc.msg is a fixed phrase ("Expecting value", "Invalid control character"...)
        raise fail(exc.msg.lower(), exc.pos) from None
    if _skip(text, i) != len(text):
        raise fail("extra data after the object", i)
    return JsonRow(line, text, cells, spans)


def jsonl_rows(reader: LineReader, selection: Selection) -> Iterator[Row]:
    for text in reader:
        if not text.strip(" \t\r\n"):
            yield JsonRow(reader.line, text, [], [])
        else:
            yield _json_row(text, reader.line, selection)


class _Recording:
    """Feeds lines to ``csv.reader`` and keeps the raw text of the record being read."""

    def __init__(self, reader: LineReader) -> None:
        self._lines = iter(reader)
        self.raw: list[str] = []

    def __iter__(self) -> _Recording:
        return self

    def __next__(self) -> str:
        text = next(self._lines)
        self.raw.append(text)
        return text

    def take(self) -> str:
        text = "".join(self.raw)
        self.raw.clear()
        return text


def _csv_error(line: int, exc: csv.Error) -> FileInputError:
    # _csv's messages name delimiters and limits, never cell contents
    return FileInputError(line, f"malformed CSV: {str(exc).split(' - ')[0]}")


def csv_rows(
    reader: LineReader, selection: Selection, delimiter: str, out: IO[str]
) -> Iterator[Row]:
    """Rows of a CSV file with a header line; the header is written to ``out`` at once.

    Raises:
        FileInputError: malformed CSV, or a ``--fields`` name missing from the header.
    """
    source = _Recording(reader)
    parsed = csv.reader(source, delimiter=delimiter, strict=True)
    try:
        header = next(parsed)
    except StopIteration:
        return
    except csv.Error as exc:
        raise _csv_error(1, exc) from None
    raw_header = source.take()
    out.write(raw_header)
    names = [h.removeprefix("\ufeff") if i == 0 else h for i, h in enumerate(header)]
    columns = [(i, n, c) for i, n in enumerate(names) if (c := selection.class_of(n)) is not None]
    if not selection.by_schema:
        missing = [n for n in selection.classes if n not in names]
        if missing:
            raise FileInputError(1, f"no column {', '.join(map(repr, missing))} in the header")
    term = "\r\n" if raw_header.endswith("\r\n") else "\n"
    dialect = CsvDialect(delimiter, term)
    while True:
        first = reader.line + 1
        try:
            values = next(parsed)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _csv_error(first, exc) from None
        cells: list[Cell] = []
        cols: list[int] = []
        for i, name, field_class in columns:
            if i < len(values) and values[i] != "":
                cells.append(Cell(name, values[i], field_class))
                cols.append(i)
        yield CsvRow(first, source.take(), values, cells, cols, dialect)


# --- progress --------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Progress on stderr: a tqdm bar with an ETA on a terminal (rows and rates when the size
    is unknown), else a plain line every ``interval`` seconds. Counts only, never values."""

    def __init__(
        self,
        command: str,
        mode: str,
        total_bytes: int | None,
        interval: float,
        stream: IO[str],
        noun: str,
    ) -> None:
        if mode == "auto":
            mode = "bar" if stream.isatty() else "lines"
        self.mode = mode
        self._command = command
        self._total = total_bytes
        self._interval = interval
        self._stream = stream
        self._noun = noun
        self._start = time.monotonic()
        self._last = self._start
        self._bytes = 0
        self._rows = 0
        self._values = 0
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            # a terminal that reports no width (a fresh pty, some CI runners) would get an
            # empty bar: assume 100 columns there
            try:
                ncols = os.get_terminal_size(stream.fileno()).columns or 100
            except (OSError, ValueError, io.UnsupportedOperation):
                ncols = 100
            common: dict[str, Any] = {
                "desc": command,
                "file": stream,
                "mininterval": 0.5,
                "ncols": ncols,
            }
            if total_bytes is not None:
                self._bar = tqdm(
                    total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, **common
                )
            else:
                self._bar = tqdm(unit=" rows", **common)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def update(self, bytes_read: int, rows: int, values: int) -> None:
        """Cumulative counts after a batch was written."""
        if self._bar is not None:
            self._bar.update(
                bytes_read - self._bytes if self._total is not None else rows - self._rows
            )
            counts = f"{values} {self._noun}"
            # by rows when the size is unknown: the bar's own count is the rows already
            self._bar.set_postfix_str(
                f"{rows} rows, {counts}" if self._total is not None else counts, refresh=False
            )
        self._bytes, self._rows, self._values = bytes_read, rows, values
        now = time.monotonic()
        if self.mode == "lines" and now - self._last >= self._interval:
            self._last = now
            self._stream.write(self.line() + "\n")
            self._stream.flush()

    def line(self) -> str:
        """``cvault tokenize-file: 12000 rows, 24000 values, 4.1 MiB of 9.0 MiB (45%),
        3900 rows/s, ETA 0:00:02`` (without the size, share and ETA when the size is unknown)."""
        elapsed = max(self.elapsed, 1e-6)
        parts = [f"{self._rows} rows", f"{self._values} {self._noun}"]
        if self._total:
            share = min(self._bytes / self._total, 1.0)
            parts.append(f"{_size(self._bytes)} of {_size(self._total)} ({share:.0%})")
        else:
            parts.append(_size(self._bytes))
        parts.append(f"{self._rows / elapsed:.0f} rows/s")
        if self._total and self._bytes:
            left = elapsed * (self._total - self._bytes) / self._bytes
            parts.append(f"ETA {_duration(max(left, 0.0))}")
        return f"{self._command}: {', '.join(parts)}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# --- the batching engine ---------------------------------------------------------------------


#: fills in ``Cell.new`` for a batch of cells (at most ``--batch`` per server call)
Processor = Callable[[Sequence[Cell], Sequence[int]], None]


def stream_rows(
    rows: Iterator[Row],
    out: IO[str],
    process: Processor,
    *,
    batch: int,
    reader: LineReader,
    progress: Progress,
) -> tuple[int, int]:
    """Read, batch, process, write in order; returns (rows, values).

    A batch goes out when it holds ``batch`` values, ``batch`` rows (rows without values still
    wait for the rows before them) or ``MAX_PENDING_BYTES`` of values.
    """
    pending: list[Row] = []
    cells: list[Cell] = []
    lines: list[int] = []  # the line of each pending cell, for error messages
    size = 0
    total_rows = total_values = 0

    def flush() -> None:
        nonlocal size, total_rows, total_values
        if cells:
            process(cells, lines)
        for row in pending:
            out.write(row.render())
        total_rows += len(pending)
        total_values += len(cells)
        pending.clear()
        cells.clear()
        lines.clear()
        size = 0
        progress.update(reader.bytes, total_rows, total_values)

    for row in rows:
        pending.append(row)
        for cell in row.cells:
            cells.append(cell)
            lines.append(row.line)
            size += len(cell.value)
        if len(cells) >= batch or len(pending) >= batch or size >= MAX_PENDING_BYTES:
            flush()
    if pending:
        flush()
    return total_rows, total_values


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def tokenizer(
    vc: VaultClient,
    tenant: str,
    *,
    kind: str,
    scope: str,
    ttl: int,
    batch: int,
) -> Processor:
    """A processor that replaces each value with its token (``batch`` values per call; a call
    failing with a retryable status is retried by the SDK)."""
    from vault.client import TokenItem
    from vault.errors import InvalidInput

    def process(cells: Sequence[Cell], lines: Sequence[int]) -> None:
        for start, end in _chunks(len(cells), batch):
            chunk = cells[start:end]
            items = [TokenItem(c.value, c.field_class, kind, scope, ttl) for c in chunk]
            try:
                tokens = list(vc.tokenize_many(tenant, items, batch_size=len(items)))
            except InvalidInput as exc:
                m = _ITEM_FIELD.fullmatch(exc.field)
                if m is None or int(m.group(1)) >= len(chunk):
                    raise
                i, attr = int(m.group(1)), m.group(2)
                if attr in ("scope", "ttl_seconds"):
                    option = "--scope" if attr == "scope" else "--ttl"
                    raise UsageError(f"{option}: {exc.problem}") from None
                raise FileInputError(
                    lines[start + i], f"refused by the server: {exc.problem}", chunk[i].name
                ) from None
            for cell, token in zip(chunk, tokens, strict=True):
                cell.new = token

    return process


@dataclass
class RevealTally:
    outputs: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def revealer(
    vc: VaultClient, tenant: str, *, purpose: str, batch: int, tally: RevealTally
) -> Processor:
    """A processor that replaces each token with what the policy gives the caller: the value
    (plain or masked), the token itself, or an empty cell (omit). A token that is not revealed
    (unknown, expired, erased, denied) keeps its cell and is counted in ``tally``."""

    def process(cells: Sequence[Cell], lines: Sequence[int]) -> None:
        # each distinct token once per call (a file repeats deterministic tokens a lot)
        unique = list(dict.fromkeys(c.value for c in cells))
        results: dict[str, tuple[str, str, str]] = {}
        for start, end in _chunks(len(unique), batch):
            for r in vc.reveal(tenant, unique[start:end], purpose=purpose):
                results[r.token] = (r.error, r.output, r.value)
        for cell in cells:
            error, output, value = results.get(cell.value, ("unknown", "", ""))
            if error or not output:
                tally.errors[error or "unknown"] += 1
                continue
            tally.outputs[output] += 1
            cell.new = "" if output == "omit" else value

    return process


# --- input and output ------------------------------------------------------------------------


class Output:
    """OUT as a text stream: a temporary file beside it, renamed over it by :meth:`commit`
    (removed if the work fails), or stdout for ``-``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._tmp: str | None = None
        if target == "-":
            self._binary: IO[bytes] = sys.stdout.buffer
        else:
            path = Path(target)
            fd, self._tmp = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=".partial"
            )
            self._binary = os.fdopen(fd, "wb")
        self.text = io.TextIOWrapper(self._binary, encoding="utf-8", newline="")

    def commit(self) -> None:
        self.text.flush()
        if self._tmp is None:
            self.text.detach()
            return
        self._binary.flush()
        os.fsync(self._binary.fileno())
        self.text.close()
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(os.stat(self.target).st_mode)
            os.chmod(self._tmp, mode)
        os.replace(self._tmp, self.target)
        self._tmp = None

    def abort(self) -> None:
        if self._tmp is None:
            with contextlib.suppress(ValueError, OSError):
                self.text.flush()
                self.text.detach()
            return
        with contextlib.suppress(OSError, ValueError):
            self.text.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)
        self._tmp = None


def detect_format(args: argparse.Namespace) -> tuple[str, str]:
    """(format, delimiter) from ``--format``/``--delimiter`` or the file names."""
    fmt = args.format
    ext = ""
    for name in (args.input, args.output):
        if name != "-":
            ext = Path(name).suffix.lower()
            if ext in _EXTENSIONS:
                break
    if fmt is None:
        fmt = _EXTENSIONS.get(ext)
        if fmt is None:
            raise UsageError("cannot tell the format from the file names: pass --format jsonl|csv")
    delimiter = args.delimiter or ("\t" if ext == ".tsv" else ",")
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise UsageError("--delimiter must be one character (not a quote or line break)")
    return fmt, delimiter


@contextlib.contextmanager
def open_input(name: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """IN as a binary stream and its size when known (a regular file)."""
    if name == "-":
        yield sys.stdin.buffer, None
        return
    with open(name, "rb") as stream:
        st = os.fstat(stream.fileno())
        yield stream, st.st_size if stat.S_ISREG(st.st_mode) else None


# --- the commands ----------------------------------------------------------------------------


def _run(
    args: argparse.Namespace,
    command: str,
    selection: Selection,
    make: Callable[[VaultClient, str], Processor],
    noun: str,
) -> tuple[int, int, float]:
    """Open everything, stream, commit; returns (rows, values, seconds). Raises on failure
    after removing the partial output."""
    from vault.cli import _client, _tenant

    fmt, delimiter = detect_format(args)
    with open_input(args.input) as (stream, total), _client(args) as vc:
        process = make(vc, _tenant(args))
        progress = Progress(command, args.progress, total, args.progress_interval, sys.stderr, noun)
        out = Output(args.output)
        try:
            reader = LineReader(stream)
            rows = (
                jsonl_rows(reader, selection)
                if fmt == "jsonl"
                else csv_rows(reader, selection, delimiter, out.text)
            )
            n_rows, n_values = stream_rows(
                rows, out.text, process, batch=args.batch, reader=reader, progress=progress
            )
            out.commit()
        except BaseException:
            out.abort()
            raise
        finally:
            progress.close()
        return n_rows, n_values, progress.elapsed


def _fail(command: str, args: argparse.Namespace, problem: str) -> None:
    where = "the output on stdout is incomplete" if args.output == "-" else "OUT was not written"
    print(f"{command}: {problem}; {where}", file=sys.stderr)


def _guarded(command: str, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Exit statuses: 0 done, 1 bad input / server error / I/O error, 2 bad options."""
    from vault.errors import VaultServiceError

    try:
        return body()
    except UsageError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    except FileInputError as exc:
        _fail(command, args, f"bad input: {exc}")
        return 1
    except VaultServiceError as exc:
        _fail(command, args, f"server error: {exc.reason}: {exc.message}")
        return 1
    except BrokenPipeError:
        _fail(command, args, "the output was closed early")
        return 1
    except KeyboardInterrupt:
        _fail(command, args, "interrupted")
        return 130
    except OSError as exc:
        name = exc.filename if isinstance(exc.filename, str) else ""
        _fail(command, args, f"{name + ': ' if name else ''}{exc.strerror or type(exc).__name__}")
        return 1


def cmd_tokenize_file(args: argparse.Namespace) -> int:
    """Replace the chosen fields' values with tokens."""
    command = "cvault tokenize-file"

    def body() -> int:
        selection = parse_selection(args.fields, args.schema, args.schema_file, need_classes=True)

        def make(vc: VaultClient, tenant: str) -> Processor:
            return tokenizer(
                vc, tenant, kind=args.kind, scope=args.scope, ttl=args.ttl, batch=args.batch
            )

        rows, values, seconds = _run(args, command, selection, make, "values")
        print(
            f"{command}: done: {rows} rows, {values} values tokenized ({args.kind}) "
            f"in {seconds:.1f} s",
            file=sys.stderr,
        )
        return 0

    return _guarded(command, args, body)


def cmd_reveal_file(args: argparse.Namespace) -> int:
    """Replace the chosen fields' tokens with what the policy gives the caller."""
    command = "cvault reveal-file"
    tally = RevealTally()

    def body() -> int:
        selection = parse_selection(args.fields, args.schema, args.schema_file, need_classes=False)

        def make(vc: VaultClient, tenant: str) -> Processor:
            return revealer(vc, tenant, purpose=args.purpose, batch=args.batch, tally=tally)

        rows, values, seconds = _run(args, command, selection, make, "tokens")
        done = sum(tally.outputs.values())
        shown = ", ".join(f"{k} {v}" for k, v in sorted(tally.outputs.items()))
        summary = f"{command}: done: {rows} rows, {values} tokens, {done} revealed"
        summary += f" ({shown})" if shown else ""
        failed = sum(tally.errors.values())
        if failed:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(tally.errors.items()))
            summary += f"; {failed} not revealed ({kinds}), their cells keep the token"
        print(f"{summary}; {seconds:.1f} s", file=sys.stderr)
        if failed and args.strict:
            print(f"{command}: --strict: {failed} tokens were not revealed", file=sys.stderr)
            return 1
        return 0

    return _guarded(command, args, body)


def _batch(text: str) -> int:
    n = int(text)
    if not 1 <= n <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_BATCH}")
    return n


def _non_negative(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def _seconds(text: str) -> float:
    x = float(text)
    if not x >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return x


def _common(p: argparse.ArgumentParser, fields_help: str) -> None:
    p.add_argument("input", metavar="IN", help="input file, or - for stdin")
    p.add_argument("output", metavar="OUT", help="output file (replaced on success), or -")
    chosen = p.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--fields", metavar="NAME[:CLASS],...", help=fields_help)
    chosen.add_argument(
        "--schema",
        action="store_true",
        help="every column/key whose name is a field of the record schema",
    )
    p.add_argument(
        "--schema-file", help="record schema (default: $CVAULT_SCHEMA, else the packaged one)"
    )
    p.add_argument(
        "--batch",
        type=_batch,
        default=DEFAULT_BATCH,
        help=f"values per server call (default {DEFAULT_BATCH}, at most {MAX_BATCH})",
    )
    p.add_argument("--format", choices=FORMATS, help="default: from the file extension")
    p.add_argument("--delimiter", help="CSV delimiter (default ',', tab for .tsv)")
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "none"),
        default="auto",
        help="auto: a bar on a terminal, else a plain line every --progress-interval seconds",
    )
    p.add_argument(
        "--progress-interval",
        type=_seconds,
        default=DEFAULT_PROGRESS_INTERVAL,
        metavar="SECONDS",
        help=f"between plain progress lines (default {DEFAULT_PROGRESS_INTERVAL:g})",
    )


def add_file_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    client_parser: Callable[[str, str], argparse.ArgumentParser],
) -> None:
    """Register ``tokenize-file`` and ``reveal-file`` (``client_parser`` adds ``--address``
    and ``--tenant``; ``--as ROLE`` is a global option of ``cvault``)."""
    del sub  # the subcommands are added through client_parser, which closes over it
    t = client_parser("tokenize-file", "replace chosen fields of a JSONL/CSV file with tokens")
    _common(
        t,
        "fields to tokenize: NAME:CLASS, or NAME for a field of the record schema",
    )
    t.add_argument("--kind", choices=KINDS, default="deterministic", help="default deterministic")
    t.add_argument("--scope", default="", help="token scope (deterministic tokens join within)")
    t.add_argument(
        "--ttl", type=_non_negative, default=0, metavar="SECONDS", help="token lifetime (0: none)"
    )
    t.set_defaults(func=cmd_tokenize_file)

    r = client_parser("reveal-file", "replace tokens in chosen fields as the policy allows")
    _common(r, "fields holding tokens (NAME, or NAME:CLASS as for tokenize-file)")
    r.add_argument("--purpose", required=True, help="why you read (a purpose of the policy)")
    r.add_argument(
        "--strict", action="store_true", help="exit 1 if any token was not revealed (after writing)"
    )
    r.set_defaults(func=cmd_reveal_file)
