"""``cvault tokenize-file`` and ``cvault reveal-file``: tokenize or reveal chosen fields of JSON
Lines and CSV files for pipelines that do not speak gRPC, streaming in batches.

Streaming: the input is read one line at a time (a line may be at most
``_formats.MAX_LINE_BYTES``), rows are held only until their batch of values has been sent
(``--batch`` values, ``--batch`` rows or ``MAX_PENDING_BYTES`` of values, whichever comes first),
then written out in order. Memory is bounded by the batch, never by the file. What each format
keeps exactly: :mod:`vault.cli._formats`.

Error messages name the line and the field, never a value; progress lines carry counts only.
The output is written to a temporary file next to OUT (mode 0600: it may hold plaintext) and
renamed over OUT only on success, so a failure leaves no partial file; an existing OUT keeps its
mode. With ``-`` the output goes to stdout as it is produced.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import stat
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from vault.cli._common import (
    EXIT_LOCAL,
    EXIT_USAGE,
    CliError,
    Subparsers,
    add_client_parser,
    client,
    service_error,
    tenant,
    wants_json,
)
from vault.cli._formats import (
    Cell,
    FileInputError,
    LineReader,
    Row,
    Selection,
    UsageError,
    csv_rows,
    jsonl_rows,
    parse_selection,
)
from vault.cli.progress import MODES, Progress
from vault.client import TokenItem, VaultClient
from vault.errors import InvalidInput, VaultServiceError

#: values per Tokenize / tokens per Reveal call (``--batch``); the server takes at most 10,000
DEFAULT_BATCH = 1000
MAX_BATCH = 10_000
#: a batch is sent early once its values reach this size, keeping gRPC messages (32 MiB at most)
#: and memory small when cells are long (free text)
MAX_PENDING_BYTES = 8 * 1024 * 1024
#: seconds between plain progress lines when stderr is not a terminal (``--progress-interval``)
DEFAULT_PROGRESS_INTERVAL = 10.0
KINDS = ("random", "deterministic", "format_preserving")
FORMATS = ("jsonl", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv"}
_ITEM_FIELD = re.compile(r"items\[(\d+)\]\.(\w+)")


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


#: told the cumulative (bytes read, rows, values) after each batch
BatchDone = Callable[[int, int, int], None]


def _file_progress(
    command: str, args: argparse.Namespace, total_bytes: int | None, noun: str
) -> tuple[Progress, BatchDone]:
    """The progress of a file (its bar counts bytes when the size is known, else rows; plain
    lines every ``--progress-interval`` seconds) and what tells it the counts after a batch."""
    sized = total_bytes is not None

    def describe(progress: Progress) -> str:
        return _file_line(progress, noun)

    progress = Progress(
        command,
        describe,
        total=total_bytes,
        unit="B" if sized else " rows",
        unit_scale=sized,
        mode=args.progress,
        interval=args.progress_interval,
    )

    def batch_done(bytes_read: int, rows: int, values: int) -> None:
        counts = f"{values} {noun}"
        # by rows when the size is unknown: the bar's own count is the rows already
        progress.update(
            bytes_read if sized else rows,
            postfix=f"{rows} rows, {counts}" if sized else counts,
            rows=rows,
            values=values,
            bytes=bytes_read,
        )

    return progress, batch_done


def _file_line(progress: Progress, noun: str) -> str:
    """``cvault tokenize-file: 12000 rows, 24000 values, 4.1 MiB of 9.0 MiB (45%),
    3900 rows/s, ETA 0:00:02`` (without the size, share and ETA when the size is unknown)."""
    elapsed = max(progress.elapsed, 1e-6)
    rows, read, total = progress.counts["rows"], progress.counts["bytes"], progress.total
    parts = [f"{rows} rows", f"{progress.counts['values']} {noun}"]
    if total:
        share = min(read / total, 1.0)
        parts.append(f"{_size(read)} of {_size(total)} ({share:.0%})")
    else:
        parts.append(_size(read))
    parts.append(f"{rows / elapsed:.0f} rows/s")
    if total and read:
        left = elapsed * (total - read) / read
        parts.append(f"ETA {_duration(max(left, 0.0))}")
    return f"{progress.label}: {', '.join(parts)}"


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
    batch_done: BatchDone,
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
        batch_done(reader.bytes, total_rows, total_values)

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
    fmt, delimiter = detect_format(args)
    with open_input(args.input) as (stream, total), client(args) as vc:
        process = make(vc, tenant(args))
        progress, batch_done = _file_progress(command, args, total, noun)
        out = Output(args.output)
        try:
            reader = LineReader(stream)
            rows = (
                jsonl_rows(reader, selection)
                if fmt == "jsonl"
                else csv_rows(reader, selection, delimiter, out.text)
            )
            n_rows, n_values = stream_rows(
                rows, out.text, process, batch=args.batch, reader=reader, batch_done=batch_done
            )
            out.commit()
        except BaseException:
            out.abort()
            raise
        finally:
            progress.close()
        return n_rows, n_values, progress.elapsed


def _fail(command: str, args: argparse.Namespace, problem: str, reason: str) -> None:
    where = "the output on stdout is incomplete" if args.output == "-" else "OUT was not written"
    if wants_json(args):
        message = json.dumps({"error": reason, "message": f"{problem}; {where}"})
        print(message, file=sys.stderr)
    else:
        print(f"{command}: {problem}; {where}", file=sys.stderr)


def _guarded(command: str, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Exit statuses: 0 done, 1 bad input / I/O error, 2 bad options, 3 server error (the
    client's own failures, e.g. no address, go to the common error path)."""
    try:
        return body()
    except UsageError as exc:
        if wants_json(args):
            print(json.dumps({"error": "usage", "message": str(exc)}), file=sys.stderr)
        else:
            print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileInputError as exc:
        _fail(command, args, f"bad input: {exc}", "bad_input")
        return EXIT_LOCAL
    except CliError:
        raise
    except VaultServiceError as exc:
        reason, message, status = service_error(args, exc)
        _fail(command, args, f"server error: {reason}: {message}", reason)
        return status
    except BrokenPipeError:
        _fail(command, args, "the output was closed early", "broken_pipe")
        return EXIT_LOCAL
    except KeyboardInterrupt:
        _fail(command, args, "interrupted", "interrupted")
        return 130
    except OSError as exc:
        name = exc.filename if isinstance(exc.filename, str) else ""
        problem = f"{name + ': ' if name else ''}{exc.strerror or type(exc).__name__}"
        _fail(command, args, problem, "os_error")
        return EXIT_LOCAL


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


def _add_file_options(p: argparse.ArgumentParser, fields_help: str) -> None:
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
        choices=MODES,
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


def register(sub: Subparsers) -> None:
    """``tokenize-file`` and ``reveal-file``, client commands (``--address``, ``--tenant``)."""
    t = add_client_parser(
        sub, "tokenize-file", "replace chosen fields of a JSONL/CSV file with tokens"
    )
    _add_file_options(t, "fields to tokenize: NAME:CLASS, or NAME for a field of the record schema")
    t.add_argument("--kind", choices=KINDS, default="deterministic", help="default deterministic")
    t.add_argument("--scope", default="", help="token scope (deterministic tokens join within)")
    t.add_argument(
        "--ttl", type=_non_negative, default=0, metavar="SECONDS", help="token lifetime (0: none)"
    )
    t.set_defaults(func=cmd_tokenize_file)

    r = add_client_parser(
        sub, "reveal-file", "replace tokens in chosen fields as the policy allows"
    )
    _add_file_options(r, "fields holding tokens (NAME, or NAME:CLASS as for tokenize-file)")
    r.add_argument("--purpose", required=True, help="why you read (a purpose of the policy)")
    r.add_argument(
        "--strict", action="store_true", help="exit 1 if any token was not revealed (after writing)"
    )
    r.set_defaults(func=cmd_reveal_file)
