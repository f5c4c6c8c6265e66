"""`cvault tokenize-file` / `cvault reveal-file` against a real server: CSV and JSON Lines round
trips, field selection, stdin/stdout, errors that name the line and field but never the value,
per-token reveal errors, no partial output on failure, bounded memory and progress output."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import (
    ADMIN_KEY,
    TEST_PURPOSE,
    TOKENS_KEY,
    api_key_of,
    plaintext_in,
    sample_record,
)
from vault.api import RunningServer
from vault.client import TokenItem, VaultClient
from vault.policy import mask
from vault.schema import FieldClass

pytestmark = pytest.mark.openbao

CVAULT = [sys.executable, "-m", "vault.cli"]
ROLES = ("backend-service", "support-agent", "ai-pipeline", "fraud-analyst", "dpo", "key-admin")
#: runs ``vault.cli.main`` (what the ``cvault`` script calls) and reports the peak RSS
RSS_WRAPPER = (
    "import resource, sys\n"
    "from vault.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "sys.stderr.write(f'\\npeak_rss_kib={peak}\\n')\n"
    "sys.exit(rc)\n"
)
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
TOKEN_RE = re.compile(r"^tok_[a-z_]+_[0-9A-Za-z]+$")


@dataclass
class Cvault:
    """``cvault`` pointed at the test server through a dev settings file (``--as ROLE``)."""

    state: Path
    tenant: str
    work: Path

    def args(self, role: str) -> list[str]:
        return ["--state-dir", str(self.state), "--as", role]

    def run(
        self,
        *args: str,
        role: str = "test-admin",
        stdin: bytes | None = None,
        timeout: float = 240,
    ) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            [*CVAULT, *self.args(role), *args, "--tenant", self.tenant],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        # no customer value of the suite in any message or progress line
        assert not plaintext_in(done.stderr.decode()), "a value appeared on stderr"
        return done

    def ok(self, *args: str, role: str = "test-admin", stdin: bytes | None = None) -> str:
        done = self.run(*args, role=role, stdin=stdin)
        assert done.returncode == 0, done.stderr.decode()
        return done.stderr.decode()

    def path(self, name: str) -> Path:
        return self.work / name


@pytest.fixture
def cvault(server: RunningServer, tmp_path: Path, tenant: str) -> Cvault:
    state = tmp_path / "state"
    state.mkdir()
    keys = {role: api_key_of(role) for role in ROLES}
    keys |= {"test-admin": ADMIN_KEY, "test-tokens": TOKENS_KEY}
    (state / "dev.json").write_text(
        json.dumps({"address": server.address, "api_keys": keys, "tenant": "unused"})
    )
    work = tmp_path / "files"
    work.mkdir()
    return Cvault(state, tenant, work)


def _csv_bytes(rows: Sequence[Sequence[str]], lineterminator: str = "\r\n") -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=lineterminator)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def _people(n: int, start: int = 0) -> list[dict[str, str]]:
    return [sample_record(start + i) for i in range(n)]


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".partial")]


# --- round trips -----------------------------------------------------------------------------


def test_csv_round_trip_is_byte_for_byte_and_tokens_join(cvault: Cvault) -> None:
    people = _people(12)
    header = ["id", "email", "phone", "full_name", "notes", "plan"]
    rows = [header]
    for i, p in enumerate(people):
        rows.append([f"c{i}", p["email"], p["phone"], p["full_name"], "", 'gold, "VIP"'])
    rows[3][4] = f'Line one, with "quotes"\nline two for {people[2]["full_name"]}'  # free text
    rows[5][1] = ""  # empty cells are left alone
    rows[6][3] = f"Lovelace, Ada {people[5]['full_name']}"
    rows[8][1] = people[1]["email"]  # the same value again, in another batch
    rows[11][1] = people[1]["email"]
    rows.append(["c-last", people[0]["email"], "", "", "", ""])  # and again, last row
    original = _csv_bytes(rows)
    src, tok, back = cvault.path("in.csv"), cvault.path("tok.csv"), cvault.path("back.csv")
    src.write_bytes(original)

    cvault.ok(
        "tokenize-file",
        str(src),
        str(tok),
        "--fields",
        "email,phone,full_name,notes",
        "--batch",
        "7",
    )
    tokenized = _csv_rows(tok.read_bytes())
    assert not plaintext_in(tok.read_text())
    assert len(tokenized) == len(rows)
    assert tokenized[0] == header
    for before, after in zip(rows[1:], tokenized[1:], strict=True):
        assert after[0] == before[0]
        assert after[5] == before[5]
        for col in (1, 2, 3, 4):
            if before[col] == "":
                assert after[col] == ""
            else:
                assert TOKEN_RE.fullmatch(after[col]), "not a deterministic token"
    emails = [r[1] for r in tokenized[1:]]
    assert emails[1] == emails[7] == emails[10]  # deterministic: equal values, equal tokens
    assert emails[0] == emails[-1]
    assert len(set(emails) - {""}) == 9  # 12 people, one blanked, two replaced by a repeat

    cvault.ok(
        "reveal-file",
        str(tok),
        str(back),
        "--fields",
        "email,phone,full_name,notes",
        "--purpose",
        TEST_PURPOSE,
        "--batch",
        "5",
    )
    assert back.read_bytes() == original


def test_jsonl_round_trip_keeps_every_other_byte(cvault: Cvault) -> None:
    p = _people(6)
    lines = [
        json.dumps({"id": 1, "email": p[0]["email"], "full_name": p[0]["full_name"]}) + "\n",
        # odd spacing, nested values, a number form json.dumps would not write, CRLF
        f'{{ "id" : 2 ,"meta": {{"email": "nested stays"}}, "email":"{p[1]["email"]}",'
        f'  "score": 1.50e1, "tags": ["a", "b"] }}\r\n',
        json.dumps({"id": 3, "email": None, "full_name": ""}) + "\n",  # null and empty: kept
        json.dumps({"id": 4, "other": "no chosen key"}) + "\n",
        "\n",  # a blank line passes through
        json.dumps(
            {"full_name": f"Zoë {p[4]['full_name']}", "email": p[4]["email"]}, ensure_ascii=False
        )
        + "\n",
        json.dumps({"id": 6, "email": p[0]["email"]}),  # no newline at the end of the file
    ]
    original = "".join(lines).encode()
    src, tok, back = cvault.path("in.jsonl"), cvault.path("tok.jsonl"), cvault.path("back.jsonl")
    src.write_bytes(original)

    cvault.ok("tokenize-file", str(src), str(tok), "--fields", "email:email,full_name:name")
    out = tok.read_bytes().split(b"\n")
    assert len(out) == len(original.split(b"\n"))
    assert not plaintext_in(tok.read_text())
    second = out[1].decode()
    assert second.startswith('{ "id" : 2 ,"meta": {"email": "nested stays"}, "email":"tok_email_')
    assert second.endswith('",  "score": 1.50e1, "tags": ["a", "b"] }\r')
    assert out[2] == lines[2].rstrip("\n").encode()
    assert out[3] == lines[3].rstrip("\n").encode()
    assert out[4] == b""
    docs = [json.loads(x) for x in out if x.strip()]
    assert list(docs[0]) == ["id", "email", "full_name"]  # key order kept
    assert docs[0]["email"] == docs[-1]["email"]  # deterministic across the file
    assert TOKEN_RE.fullmatch(docs[4]["full_name"])

    cvault.ok(
        "reveal-file", str(tok), str(back), "--fields", "email,full_name", "--purpose", TEST_PURPOSE
    )
    assert back.read_bytes() == original


@SQLITE_ONLY
def test_schema_selects_the_schema_fields(cvault: Cvault) -> None:
    p = _people(3)
    rows = [["customer_ref", "email", "national_id", "segment", "full_name"]]
    rows += [
        [f"ref-{i}", x["email"], x["national_id"], "b2c", x["full_name"]] for i, x in enumerate(p)
    ]
    src, tok = cvault.path("in.csv"), cvault.path("tok.csv")
    src.write_bytes(_csv_bytes(rows))
    cvault.ok("tokenize-file", str(src), str(tok), "--schema")
    got = _csv_rows(tok.read_bytes())
    for before, after in zip(rows[1:], got[1:], strict=True):
        assert after[0] == before[0]
        assert after[3] == before[3]
        assert all(TOKEN_RE.fullmatch(after[c]) for c in (1, 2, 4))
    assert got[1][1].startswith("tok_email_")
    assert got[1][2].startswith("tok_national_id_")
    assert got[1][4].startswith("tok_name_")

    jsrc, jtok = cvault.path("in.jsonl"), cvault.path("tok.jsonl")
    jsrc.write_text(json.dumps({"segment": "b2c", "phone": p[0]["phone"], "ref": "x"}) + "\n")
    cvault.ok("tokenize-file", str(jsrc), str(jtok), "--schema")
    doc = json.loads(jtok.read_text())
    assert doc["segment"] == "b2c"
    assert doc["ref"] == "x"
    assert doc["phone"].startswith("tok_phone_")


@SQLITE_ONLY
def test_field_names_take_their_class_from_the_schema_or_are_refused(cvault: Cvault) -> None:
    p = _people(2)
    src, out = cvault.path("in.csv"), cvault.path("out.csv")
    src.write_bytes(_csv_bytes([["contact", "email"], [p[0]["email"], p[1]["email"]]]))
    unknown = cvault.run("tokenize-file", str(src), str(out), "--fields", "contact")
    assert unknown.returncode == 2
    assert "field 'contact' is not in the record schema" in unknown.stderr.decode()
    bad_class = cvault.run("tokenize-file", str(src), str(out), "--fields", "contact:emial")
    assert bad_class.returncode == 2
    assert "unknown class 'emial'" in bad_class.stderr.decode()
    missing = cvault.run("tokenize-file", str(src), str(out), "--fields", "email,phone")
    assert missing.returncode == 1
    assert "line 1: no column 'phone' in the header" in missing.stderr.decode()
    assert not out.exists()
    assert _no_temp_files(cvault.work)
    cvault.ok("tokenize-file", str(src), str(out), "--fields", "contact:email,email")
    got = _csv_rows(out.read_bytes())[1]
    assert got[0].startswith("tok_email_")
    assert got[1].startswith("tok_email_")


@SQLITE_ONLY
def test_stdin_to_stdout(cvault: Cvault) -> None:
    p = _people(30)
    data = "".join(json.dumps({"n": i, "email": x["email"]}) + "\n" for i, x in enumerate(p))
    done = cvault.run(
        "tokenize-file",
        "-",
        "-",
        "--format",
        "jsonl",
        "--fields",
        "email",
        "--batch",
        "10",
        "--progress-interval",
        "0",
        stdin=data.encode(),
    )
    assert done.returncode == 0, done.stderr.decode()
    docs = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [d["n"] for d in docs] == list(range(30))
    assert all(d["email"].startswith("tok_email_") for d in docs)
    progress = done.stderr.decode().splitlines()
    # the size of stdin is unknown: counts and rates, no share and no ETA
    assert re.fullmatch(
        r"cvault tokenize-file: 10 rows, 10 values, [\d.]+ (B|KiB), \d+ rows/s", progress[0]
    )
    assert "ETA" not in done.stderr.decode()
    back = cvault.run(
        "reveal-file",
        "-",
        "-",
        "--format",
        "jsonl",
        "--fields",
        "email",
        "--purpose",
        TEST_PURPOSE,
        stdin=done.stdout,
    )
    assert back.returncode == 0, back.stderr.decode()
    assert back.stdout.decode() == data


# --- bad input ----------------------------------------------------------------------------------


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        pytest.param(
            '{"email": "{a}"}\n{"email": "{b}"}\n{"email": 4000123412341234}\n',
            ["--fields", "email"],
            "bad input: line 3, field 'email': expected a string, got a number",
            id="jsonl-number",
        ),
        pytest.param(
            '{"email": "{a}"}\n{"email": ["{b}"]}\n',
            ["--fields", "email"],
            "bad input: line 2, field 'email': expected a string, got an array",
            id="jsonl-array",
        ),
        pytest.param(
            '{"email": "{a}"}\n{"email": "{b}", }\n',
            ["--fields", "email"],
            "bad input: line 2: invalid JSON: expecting a key in double quotes at column ",
            id="jsonl-syntax",
        ),
        pytest.param(
            '["{a}"]\n',
            ["--fields", "email"],
            "bad input: line 1: not a JSON object",
            id="jsonl-not-object",
        ),
        pytest.param(
            '{"email": "{a}", "email": "{b}"}\n',
            ["--fields", "email"],
            "bad input: line 1, field 'email': key appears twice",
            id="jsonl-duplicate",
        ),
        pytest.param(
            '{"email": "{a}"}\n{"email": "@@{b}"}\n',
            ["--fields", "email", "--kind", "format_preserving"],
            "bad input: line 2, field 'email': refused by the server: not a valid email",
            id="server-refuses-value",
        ),
        pytest.param(
            'email,phone\r\n{a},1\r\n"{b}"x,2\r\n',
            ["--fields", "email", "--format", "csv"],
            "bad input: line 3: malformed CSV: ',' expected after '\"'",
            id="csv-quote",
        ),
    ],
)
def test_bad_input_names_line_and_field_never_the_value(
    cvault: Cvault, content: str, args: list[str], message: str
) -> None:
    a, b = _people(2)
    src, out = cvault.path("in.jsonl"), cvault.path("out.jsonl")
    src.write_text(content.replace("{a}", a["email"]).replace("{b}", b["email"]))
    done = cvault.run("tokenize-file", str(src), str(out), *args)
    stderr = done.stderr.decode()
    assert done.returncode == 1
    assert message in stderr
    assert stderr.rstrip().endswith("OUT was not written")
    assert "4000123412341234" not in stderr
    assert "@example.com" not in stderr
    assert not out.exists()
    assert _no_temp_files(cvault.work)


@SQLITE_ONLY
def test_non_utf8_input_names_the_line(cvault: Cvault) -> None:
    src, out = cvault.path("in.csv"), cvault.path("out.csv")
    src.write_bytes(b"email\r\nada@example.org\r\n\xff\xfe@example.org\r\n")
    done = cvault.run("tokenize-file", str(src), str(out), "--fields", "email")
    assert done.returncode == 1
    assert "bad input: line 3: not UTF-8 text" in done.stderr.decode()
    assert not out.exists()


# --- reveal errors ------------------------------------------------------------------------------


def _tokens(admin: VaultClient, tenant: str, values: Sequence[str], ttl: int = 0) -> list[str]:
    items = [TokenItem(v, "email", "deterministic", ttl_seconds=ttl) for v in values]
    return admin.tokenize(tenant, items)


@SQLITE_ONLY
def test_reveal_counts_per_token_errors_and_keeps_the_token(
    cvault: Cvault, admin_client: VaultClient
) -> None:
    tenant = cvault.tenant
    p = _people(4)
    good = _tokens(admin_client, tenant, [x["email"] for x in p[:2]])
    card = admin_client.tokenize(tenant, [TokenItem(p[0]["card_number"], "card_number")])[0]
    expired = _tokens(admin_client, tenant, [p[2]["email"]], ttl=1)[0]
    record = admin_client.create_record(tenant, {"email": p[3]["email"]})
    erased = admin_client.tokenize(
        tenant, [TokenItem(p[3]["email"], "email", record_id=record.record_id)]
    )[0]
    admin_client.delete_record(tenant, record.record_id)
    unknown = "tok_email_0000000000000000000000"
    rows = [
        ["email", "card"],
        [good[0], card],
        [unknown, ""],
        [expired, ""],
        [erased, card],
        [good[1], ""],
        [unknown, ""],
    ]
    src, out = cvault.path("tok.csv"), cvault.path("out.csv")
    src.write_bytes(_csv_bytes(rows))
    time.sleep(1.5)  # the TTL of `expired` passes

    args = ["reveal-file", str(src), str(out), "--fields", "email,card"]
    args += ["--purpose", "account-management"]
    stderr = cvault.ok(*args, role="backend-service")
    got = _csv_rows(out.read_bytes())
    assert got[1] == [p[0]["email"], mask(FieldClass.CARD_NUMBER, p[0]["card_number"])]
    assert got[4][1] == got[1][1]  # backend-service sees card numbers masked
    assert [r[0] for r in got[2:]] == [unknown, expired, erased, p[1]["email"], unknown]
    summary = stderr.strip().splitlines()[-1]
    assert summary.startswith(
        "cvault reveal-file: done: 6 rows, 8 tokens, 4 revealed (masked 2, plain 2); "
        "4 not revealed (erased 1, expired 1, unknown 2), their cells keep the token; "
    )

    out.unlink()
    strict = cvault.run(*args, "--strict", role="backend-service")
    assert strict.returncode == 1
    assert "--strict: 4 tokens were not revealed" in strict.stderr.decode()
    assert _csv_rows(out.read_bytes()) == got  # written all the same


@SQLITE_ONLY
def test_reveal_needs_token_reveal_and_schema_selects_the_fields(cvault: Cvault) -> None:
    p = _people(1)[0]
    src, tok, out = cvault.path("in.jsonl"), cvault.path("tok.jsonl"), cvault.path("out.jsonl")
    doc = {
        "email": p["email"],
        "full_name": p["full_name"],
        "address": "1 Main St",
        "national_id": p["national_id"],
    }
    src.write_text(json.dumps(doc) + "\n")
    cvault.ok("tokenize-file", str(src), str(tok), "--schema")
    tokens = json.loads(tok.read_text())
    # support-agent may not reveal tokens at all: a server error, no output
    denied = cvault.run(
        "reveal-file",
        str(tok),
        str(out),
        "--schema",
        "--purpose",
        "customer-support",
        role="support-agent",
    )
    assert denied.returncode == 3  # a server error
    assert "server error: action_not_allowed: role 'support-agent' may not perform " in (
        denied.stderr.decode()
    )
    assert not out.exists()
    assert _no_temp_files(cvault.work)
    cvault.ok("reveal-file", str(tok), str(out), "--schema", "--purpose", "testing")
    assert json.loads(out.read_text()) == doc
    assert tokens["address"].startswith("tok_address_")


# --- failures leave no partial output --------------------------------------------------------


@SQLITE_ONLY
def test_failure_after_many_rows_leaves_no_partial_output(cvault: Cvault) -> None:
    p = _people(500)
    lines = [json.dumps({"n": i, "email": x["email"]}) + "\n" for i, x in enumerate(p)]
    lines[450] = json.dumps({"n": 450, "email": True}) + "\n"
    src, out = cvault.path("in.jsonl"), cvault.path("out.jsonl")
    src.write_text("".join(lines))
    out.write_text("an older result\n")
    done = cvault.run("tokenize-file", str(src), str(out), "--fields", "email", "--batch", "50")
    assert done.returncode == 1
    assert "line 451, field 'email': expected a string, got a boolean" in done.stderr.decode()
    assert out.read_text() == "an older result\n"  # untouched: the new one was never renamed
    assert _no_temp_files(cvault.work)


@SQLITE_ONLY
def test_server_error_stops_with_a_clear_message(cvault: Cvault) -> None:
    p = _people(3)
    src, out = cvault.path("in.csv"), cvault.path("out.csv")
    src.write_bytes(_csv_bytes([["email"], *[[x["email"]] for x in p]]))
    # support-agent may not create tokens
    done = cvault.run(
        "tokenize-file", str(src), str(out), "--fields", "email", role="support-agent"
    )
    stderr = done.stderr.decode()
    assert done.returncode == 3  # a server error
    assert stderr.startswith(
        "cvault tokenize-file: server error: action_not_allowed: "
        "role 'support-agent' may not perform 'token.create'"
    )
    assert stderr.rstrip().endswith("OUT was not written")
    assert not out.exists()
    assert _no_temp_files(cvault.work)


# --- memory and progress ---------------------------------------------------------------------


def _peak_rss_kib(cvault: Cvault, *args: str) -> int:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RSS_WRAPPER,
            *cvault.args("test-admin"),
            *args,
            "--tenant",
            cvault.tenant,
        ],
        capture_output=True,
        timeout=280,
        check=False,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    m = re.search(r"peak_rss_kib=(\d+)", stderr)
    assert m, stderr
    return int(m.group(1))


def _wide_csv(path: Path, rows: int, payload: int) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "email", "phone", "payload"])
        for i in range(rows):
            x = sample_record(i)
            writer.writerow([i, x["email"], x["phone"], f"{i:08d}" + "p" * payload])


@pytest.mark.slow
@SQLITE_ONLY
def test_memory_stays_bounded_on_a_large_file(cvault: Cvault) -> None:
    """20,000 rows of ~3 KiB (60 MiB): the peak RSS must stay within a few MiB of the same
    command on a 20-row file. Reading the whole file first would add more than 60 MiB."""
    small, big = cvault.path("small.csv"), cvault.path("big.csv")
    _wide_csv(small, 20, 3000)
    _wide_csv(big, 20_000, 3000)
    size_mib = big.stat().st_size / 2**20
    assert size_mib > 55
    args = ["tokenize-file", "--fields", "email,phone", "--progress", "none"]
    base = _peak_rss_kib(cvault, *args[:1], str(small), str(cvault.path("s.out.csv")), *args[1:])
    peak = _peak_rss_kib(cvault, *args[:1], str(big), str(cvault.path("b.out.csv")), *args[1:])
    grown_mib = (peak - base) / 1024
    assert grown_mib < 24, f"peak RSS grew by {grown_mib:.0f} MiB on a {size_mib:.0f} MiB file"
    with cvault.path("b.out.csv").open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        n = 0
        for n, row in enumerate(reader, 1):
            assert row[1].startswith("tok_email_")
            assert row[3].startswith(f"{n - 1:08d}")
    assert n == 20_000


PROGRESS_LINE = re.compile(
    r"cvault tokenize-file: (\d+) rows, (\d+) values, [\d.]+ (B|KiB|MiB) of [\d.]+ (KiB|MiB) "
    r"\((\d+)%\), \d+ rows/s, ETA \d+:\d\d:\d\d"
)


@SQLITE_ONLY
def test_progress_lines_when_stderr_is_not_a_terminal(cvault: Cvault) -> None:
    p = _people(250)
    src, out = cvault.path("in.csv"), cvault.path("out.csv")
    src.write_bytes(_csv_bytes([["email", "phone"], *[[x["email"], x["phone"]] for x in p]]))
    stderr = cvault.ok(
        "tokenize-file",
        str(src),
        str(out),
        "--fields",
        "email,phone",
        "--batch",
        "100",
        "--progress-interval",
        "0",
    )
    assert "\r" not in stderr
    assert "\x1b" not in stderr
    lines = stderr.splitlines()
    progress = [PROGRESS_LINE.fullmatch(line) for line in lines[:-1]]
    assert all(progress), lines
    counts = [(int(m.group(1)), int(m.group(2))) for m in progress if m]
    assert counts == [(50, 100), (100, 200), (150, 300), (200, 400), (250, 500)]
    assert [m.group(5) for m in progress if m][-1] == "100"
    assert re.fullmatch(
        r"cvault tokenize-file: done: 250 rows, 500 values tokenized \(deterministic\) "
        r"in [\d.]+ s",
        lines[-1],
    )
    # the default interval is 10 s: a short run prints only the summary
    quiet = cvault.ok("tokenize-file", str(src), str(out), "--fields", "email,phone")
    assert len(quiet.splitlines()) == 1


@SQLITE_ONLY
def test_progress_bar_with_eta_on_a_terminal(cvault: Cvault) -> None:
    p = _people(200)
    src, out = cvault.path("in.jsonl"), cvault.path("out.jsonl")
    src.write_text("".join(json.dumps({"email": x["email"]}) + "\n" for x in p))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run(
            [
                *CVAULT,
                *cvault.args("test-admin"),
                "tokenize-file",
                str(src),
                str(out),
                "--fields",
                "email",
                "--batch",
                "20",
                "--tenant",
                cvault.tenant,
            ],
            stdout=subprocess.DEVNULL,
            stderr=slave,
            timeout=120,
            check=False,
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0, text
    assert "\r" in text  # redrawn in place
    # tqdm's bar: "cvault tokenize-file: 100%|####| 9.77k/9.77k [00:00<00:00, ...]"
    assert re.search(r"cvault tokenize-file: +100%\|", text), text
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", text), text  # elapsed<ETA
    assert "200 rows, 200 values" in text
    assert not plaintext_in(text)
