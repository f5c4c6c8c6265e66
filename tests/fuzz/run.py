"""``make fuzz``: a long fuzz run of every RPC against the embedded default shape.

Starts a real OpenBao dev server, then ``--workers`` processes, each with its own SQLite vault
(sample policy, in-process gRPC server) and its own share of ``--examples`` (hypothesis, in
chunks with fresh seeds). At the end it prints the status table (one row per RPC, a column per
status code) and the first failing examples, and exits 1 if any check failed (see
``tests/fuzz/harness.py`` for the checks), 0 otherwise.

    .venv/bin/python -m tests.fuzz.run --examples 100000 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.harness import (
    ALL_METHODS,
    VAULT_METHODS,
    Finding,
    FuzzWorld,
    Stats,
    method_by_name,
)
from tests.support import FIELD_CLASSES, KEY_PREFIX
from vault.keys import init_field_keys
from vault.keys.openbao_dev import OpenBaoDevServer

#: the vault's RPCs are drawn three times as often as each health or reflection RPC
_WEIGHTED_METHODS = [m for m in VAULT_METHODS for _ in range(3)] + [
    m for m in ALL_METHODS if m not in VAULT_METHODS
]


@dataclass(frozen=True)
class Job:
    """One worker's share of the run."""

    worker: int
    examples: int
    seed: int
    chunk: int
    openbao_url: str
    openbao_token: str
    workdir: str
    progress_every: float
    trace: bool = False
    only: tuple[str, ...] = ()


def chunk_settings(examples: int) -> settings:
    """No example database, no shrinking (the run keeps going and reports every finding), no
    deadline, and no health checks about slow or large examples: they are the point."""
    return settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
        report_multiple_bugs=False,
    )


#: the grace of the stop after a run (cvault dev's default)
STOP_GRACE = 2.0


def run_job(job: Job) -> Stats:
    """One worker: its own vault, seeded, then ``job.examples`` examples in chunks."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger().handlers[0].setLevel(logging.CRITICAL)  # the world keeps the errors
    workdir = Path(job.workdir) / f"worker-{job.worker}"
    workdir.mkdir(parents=True, exist_ok=True)
    world = FuzzWorld(workdir, job.openbao_url, job.openbao_token)
    if job.trace:
        world.trace = sys.stderr
    methods = [method_by_name(name) for name in job.only] or _WEIGHTED_METHODS
    started = last = time.monotonic()
    try:
        world.seed()
        number = 0
        while world.stats.examples < job.examples:
            size = min(job.chunk, job.examples - world.stats.examples)

            @settings(chunk_settings(size))
            @seed(job.seed + number)
            @given(st.data())
            def chunk(data: st.DataObject) -> None:
                method = data.draw(st.sampled_from(methods))
                world.example(data, method)

            before = world.stats.examples
            try:
                chunk()
            except Exception as exc:  # a bug of the harness: note it and go on
                world.stats.notes.append(
                    f"worker {job.worker} chunk {number}: harness error {type(exc).__name__}: "
                    f"{str(exc)[:300]}"
                )
                world.stats.failures["harness"] += 1
            number += 1
            if world.stats.examples == before:
                world.stats.notes.append(f"worker {job.worker}: a chunk made no call; stopped")
                world.stats.failures["harness"] += 1
                break
            now = time.monotonic()
            if now - last >= job.progress_every:
                last = now
                done = world.stats.examples
                rate = done / (now - started)
                print(
                    f"[worker {job.worker}] {done}/{job.examples} examples, {rate:.0f}/s, "
                    f"{len(world.stats.findings)} findings, "
                    f"eta {(job.examples - done) / max(rate, 0.1) / 60:.1f} min",
                    file=sys.stderr,
                    flush=True,
                )
        wrong = world.rows.verify()
        if wrong:
            world.stats.notes.append(f"worker {job.worker}: row counters off: {'; '.join(wrong)}")
            world.stats.failures["row counters"] += 1
    finally:
        took = world.close(grace=STOP_GRACE)
        # what SIGTERM does after the run: the bound is the grace plus 5 s
        world.stats.notes.append(
            f"worker {job.worker}: the server stopped {took:.1f} s after the stop"
            f" (grace {STOP_GRACE:g} s)"
        )
        if took > STOP_GRACE + 5:
            world.stats.failures["shutdown"] += 1
    return world.stats


def print_findings(findings: list[Finding], limit: int) -> None:
    """The first finding of each distinct (RPC, first problem), at most ``limit`` of them."""
    firsts: dict[tuple[str, str], Finding] = {}
    for f in findings:
        firsts.setdefault((f.rpc, f.problems[0].split(":")[0]), f)
    shown = list(firsts.values())[:limit]
    print(f"\n{len(findings)} findings kept, {len(firsts)} distinct; the first of each:")
    for f in shown:
        print("\n" + f.describe())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("--examples", type=int, default=100_000, help="in total (default 100000)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="base seed (default: random)")
    parser.add_argument("--chunk", type=int, default=500, help="examples per hypothesis run")
    parser.add_argument("--show", type=int, default=25, help="failing examples to print")
    parser.add_argument("--progress", type=float, default=30.0, help="seconds between lines")
    parser.add_argument("--trace", action="store_true", help="a line per call on stderr")
    parser.add_argument(
        "--only", action="append", default=[], metavar="RPC", help="fuzz only this RPC (repeatable)"
    )
    args = parser.parse_args(argv)
    base_seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    workers = max(1, args.workers)
    print(
        f"fuzzing {len(ALL_METHODS)} RPCs ({len(VAULT_METHODS)} of vault.v1): "
        f"{args.examples} examples, {workers} workers, seed {base_seed}",
        flush=True,
    )
    started = time.monotonic()
    total = Stats()
    with tempfile.TemporaryDirectory(prefix="cvault-fuzz-") as tmp:
        bao = OpenBaoDevServer()
        bao.start()
        try:
            init_field_keys(
                bao.url, bao.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
            )
            share, extra = divmod(args.examples, workers)
            jobs = [
                Job(
                    worker=i,
                    examples=share + (1 if i < extra else 0),
                    seed=base_seed + 1_000_003 * i,
                    chunk=args.chunk,
                    openbao_url=bao.url,
                    openbao_token=bao.root_token,
                    workdir=tmp,
                    progress_every=args.progress,
                    trace=args.trace,
                    only=tuple(args.only),
                )
                for i in range(workers)
            ]
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(run_job, job): job for job in jobs}
                for future in as_completed(futures):
                    try:
                        total.merge(future.result())
                    except Exception as exc:  # a worker died: say so, keep the others' results
                        total.notes.append(
                            f"worker {futures[future].worker} died: {type(exc).__name__}: {exc}"
                        )
                        total.failures["harness"] += 1
        finally:
            bao.stop()
    elapsed = time.monotonic() - started
    print(
        f"\n{total.examples} examples in {elapsed / 60:.1f} min "
        f"({total.examples / elapsed:.0f}/s, {workers} workers, seed {base_seed}, "
        f"load average {os.getloadavg()[0]:.1f})\n"
    )
    print(total.table())
    vault_codes = total.vault_codes()
    print(
        f"\nvault.v1: {vault_codes['INTERNAL']} INTERNAL, {vault_codes['UNKNOWN']} UNKNOWN, "
        f"{sum(total.failures.values())} calls with a failed check"
    )
    for note in total.notes:
        print(f"\nnote: {note}")
    if total.findings:
        print_findings(total.findings, args.show)
    failed = bool(total.findings) or bool(total.failures)
    print("\nFAILED" if failed else "\nOK: no check failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
