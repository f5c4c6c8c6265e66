"""The file formats of ``cvault tokenize-file`` and ``reveal-file``: choosing the fields, and
reading JSON Lines and CSV rows so that only the chosen values change when a row is written back.

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
(the first line of a CSV record) and the field, never a value.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Protocol

from vault.errors import ConfigError
from vault.schema import FieldClass, RecordSchema, load_schema

#: longest input line. Rows wait in memory for their batch, so this times the batch bounds the
#: memory used; 16 MiB leaves room for wide JSON lines (embeddings, documents) beside the values.
MAX_LINE_BYTES = 16 * 1024 * 1024


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
