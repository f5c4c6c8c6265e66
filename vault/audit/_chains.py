"""Which chain a process appends to: one per server process by default, so that appenders in
different processes never wait for each other's lock on a chain head.

A chain name is 1-32 of ``A-Z a-z 0-9 _ . -`` and neither ``.`` nor ``..`` (it is also a path
segment of the checkpoint store). The defaults come from the host name, which is stable across
restarts (a Kubernetes pod name, a container or machine name), so a restarted server carries on
its chain instead of starting a new one each time:

- a server: ``[audit] chain`` when set, else ``<host>``; worker ``i`` of ``cvault serve
  --workers N`` appends ``-w<i>`` to either;
- an operator command: ``[audit] operator_chain`` when set, else ``ops_<host>`` (a host's
  label never holds ``_``, so no server's default chain can be it).

Two server processes on one host without ``--workers`` derive the same name: they share a chain,
which is correct (appends serialize on its head) but contended; give each its own
``[audit] chain`` (or ``CVAULT_AUDIT_CHAIN``) instead.
"""

from __future__ import annotations

import hashlib
import re
import socket
from typing import Final

#: also a path segment of the checkpoint store: "." and ".." are refused
CHAIN_RE: Final = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9_.-]{1,32}")
MAX_CHAIN: Final = 32
#: prefix of the default operator chain (no host label holds "_": no server default has it)
OPERATOR_PREFIX: Final = "ops_"
#: what a host name becomes "-" of: anything a chain name cannot hold, and "_" (see
#: OPERATOR_PREFIX), so that a server's default chain never looks like an operator's
_NOT_IN_LABEL: Final = re.compile(r"[^A-Za-z0-9.-]+")
#: hex digits of the host name's hash kept when the name must be shortened
_HASH_DIGITS: Final = 8


def valid_chain(name: str) -> bool:
    """True for a chain name (see the module docstring)."""
    return CHAIN_RE.fullmatch(name) is not None


def host_label(host: str | None = None, *, room: int = MAX_CHAIN) -> str:
    """``host`` (default: this machine's name) as at most ``room`` chain-name characters.

    Characters a chain name cannot hold, and ``_``, become ``-``. A name longer than ``room``
    keeps its start and ends in a hash of the whole name, so two long names that differ only at
    the end (``...-statefulset-0`` and ``-1``) stay apart. An empty result is ``host``.
    """
    raw = socket.gethostname() if host is None else host
    label = _NOT_IN_LABEL.sub("-", raw).strip(".-") or "host"
    if len(label) > room:
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
        label = f"{label[: max(1, room - _HASH_DIGITS - 1)]}-{digest}"[:room]
    return label


def worker_suffix(worker: int | None) -> str:
    """``-w<i>`` for worker ``i`` of ``cvault serve --workers N``; "" for a lone server."""
    return "" if worker is None else f"-w{worker}"


def server_chain(
    configured: str = "", *, worker: int | None = None, host: str | None = None
) -> str:
    """The chain a server process appends to: ``configured`` (``[audit] chain``) or the host's
    label, with the worker's suffix. A configured name too long for the suffix is shortened
    like a host name.

    Raises:
        ValueError: ``configured`` is not a valid chain name, or ``worker`` is negative.
    """
    if worker is not None and worker < 0:
        raise ValueError("worker index must be >= 0")
    if configured and not valid_chain(configured):
        raise ValueError(f"invalid audit chain name {configured!r:.40}")
    suffix = worker_suffix(worker)
    room = MAX_CHAIN - len(suffix)
    base = configured if configured and len(configured) <= room else None
    if base is None:
        base = host_label(configured or host, room=room)
    return base + suffix


def operator_chain(configured: str = "", *, host: str | None = None) -> str:
    """The chain an operator command appends its own rows to: ``configured``
    (``[audit] operator_chain``) or ``ops_<host>``, never a server's default chain.

    Raises:
        ValueError: ``configured`` is not a valid chain name.
    """
    if configured:
        if not valid_chain(configured):
            raise ValueError(f"invalid audit operator chain name {configured!r:.40}")
        return configured
    return OPERATOR_PREFIX + host_label(host, room=MAX_CHAIN - len(OPERATOR_PREFIX))
