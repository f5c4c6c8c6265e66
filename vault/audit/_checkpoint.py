"""Where a chain is checkpointed outside the database: write-once documents, one per checkpoint
(OpenBao KV v2 in production), and their format.

**Layout.** The checkpoint of chain ``c`` at seq ``s`` is the document named ``str(s)`` in the
chain's folder (``<kv_path>/<c>/<s>`` in KV). It is created once and never replaced: the key
server's policy lets the service *create* a checkpoint, never update or delete one, so whoever
holds the service's credential can add checkpoints but cannot rewrite the ones already there.

**Format 2** (written now; all values strings)::

    {"format": "2", "chain": <chain>, "seq": <decimal seq>, "mac": <hex of that row's MAC>,
     "prev": <seq of the format-2 checkpoint its writer verified from; "0" for none>,
     "time": <ISO time the checkpoint was written>}

``prev`` links checkpoints: a checkpoint whose ``prev`` names one that is not there shows that
one was deleted.

**Epochs** (after a database restore, see ``vault/audit/_restore.py``). The checkpoints written
before any re-anchor are epoch 0, named ``<seq>`` as above. A re-anchor starts epoch ``n`` (1,
2, ...): its checkpoints are named ``e<n>-<seq>`` in the same folder and carry
``"epoch": "<n>"``; their ``prev`` links stay within the epoch ("0" for the epoch's first, the
re-anchor's own). So the restored chain's next seqs never collide with the write-once documents
of the seqs it lost, and the checkpoint writer always continues the newest epoch.

**Format 1** (versions before write-once checkpoints): one document at ``<kv_path>`` itself,
overwritten at each checkpoint, the same fields without ``prev``. It is still read, as one more
checkpoint of the chain it names (see :meth:`CheckpointStore.legacy`), and never written.
"""

from __future__ import annotations

import hmac
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

from vault.deadline import Deadline

CHECKPOINT_FORMAT: Final = "2"
LEGACY_FORMAT: Final = "1"
_SEQ_NAME = re.compile(r"[1-9][0-9]{0,18}")
_EPOCH_NAME = re.compile(r"e([1-9][0-9]{0,8})-([1-9][0-9]{0,18})")


class CheckpointStore(Protocol):
    """Write-once checkpoint documents, in one folder per chain.

    Implementations: :class:`vault.keys.KvCheckpointStore` (OpenBao/Vault KV v2) and
    :class:`MemoryCheckpointStore` (tests and single-process development only). Every method
    raises :class:`~vault.errors.KeyServerUnavailable` or
    :class:`~vault.errors.KeyServerRefused` when the store is down or refuses.
    """

    def create(self, chain: str, name: str, data: Mapping[str, str], *, deadline: Deadline) -> bool:
        """Write ``data`` as the document ``name`` of ``chain``, only if there is none yet.

        Returns:
            True when written; False when a document of that name exists (it is left as is).
        """
        ...

    def names(self, chain: str, *, deadline: Deadline) -> list[str]:
        """The names of ``chain``'s documents (any order; [] when there are none)."""
        ...

    def read(self, chain: str, name: str, *, deadline: Deadline) -> dict[str, str] | None:
        """The document ``name`` of ``chain``; None when it is not there (or was deleted)."""
        ...

    def chains(self, *, deadline: Deadline) -> list[str]:
        """The chains that have a folder of documents (any order)."""
        ...

    def legacy(self, *, deadline: Deadline) -> dict[str, str] | None:
        """The single overwritten format-1 document of earlier versions; None when absent."""
        ...

    def rewritable(self, chain: str, *, deadline: Deadline) -> bool:
        """True when the store would let this process overwrite or delete ``chain``'s
        documents (so they are not write-once for whoever holds its credential)."""
        ...


class MemoryCheckpointStore:
    """A :class:`CheckpointStore` in process memory, for tests (proves nothing after a restart).

    Args:
        legacy: the format-1 document an earlier version left (tests of upgrades).
    """

    def __init__(self, legacy: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._docs: dict[tuple[str, str], dict[str, str]] = {}
        self._legacy = None if legacy is None else dict(legacy)
        self._newest: dict[str, str] | None = None
        #: documents created (refused writes to an existing name do not count)
        self.puts = 0

    def create(self, chain: str, name: str, data: Mapping[str, str], *, deadline: Deadline) -> bool:
        with self._lock:
            if (chain, name) in self._docs:
                return False
            self._docs[chain, name] = dict(data)
            self._newest = dict(data)
            self.puts += 1
            return True

    def names(self, chain: str, *, deadline: Deadline) -> list[str]:
        with self._lock:
            return [name for (c, name) in self._docs if c == chain]

    def read(self, chain: str, name: str, *, deadline: Deadline) -> dict[str, str] | None:
        with self._lock:
            doc = self._docs.get((chain, name))
            return None if doc is None else dict(doc)

    def chains(self, *, deadline: Deadline) -> list[str]:
        with self._lock:
            return sorted({c for (c, _) in self._docs})

    def legacy(self, *, deadline: Deadline) -> dict[str, str] | None:
        with self._lock:
            return None if self._legacy is None else dict(self._legacy)

    def rewritable(self, chain: str, *, deadline: Deadline) -> bool:
        return False

    def get(self, *, deadline: Deadline) -> dict[str, str] | None:
        """The document created last, of any chain (a test's view of "the checkpoint")."""
        with self._lock:
            return None if self._newest is None else dict(self._newest)

    def replace(self, chain: str, name: str, data: Mapping[str, str] | None) -> None:
        """Overwrite (``data``) or delete (None) a document: what the key server refuses the
        service, for tests of what verification finds when someone with more rights did it."""
        with self._lock:
            if data is None:
                self._docs.pop((chain, name), None)
            else:
                self._docs[chain, name] = dict(data)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed checkpoint: the row ``seq`` of ``chain`` had MAC ``mac``.

    ``prev`` is the seq of the format-2 checkpoint of the same epoch its writer verified from
    (0: none); None for a format-1 (legacy) checkpoint, which names no predecessor. ``epoch`` is
    0 until a re-anchor after a restore starts a new one.
    """

    chain: str
    seq: int
    mac: bytes
    prev: int | None = None
    epoch: int = 0
    #: when its writer says it wrote it (ISO 8601, as stored; "" when absent or malformed):
    #: for an operator's report only, never compared
    written: str = field(default="", compare=False)


def checkpoint_name(seq: int, epoch: int = 0) -> str:
    """The document name of the checkpoint at ``seq``: the decimal seq (epoch 0), else
    ``e<epoch>-<seq>``."""
    return str(seq) if epoch == 0 else f"e{epoch}-{seq}"


def seq_of_name(name: str) -> int | None:
    """The seq an epoch-0 document name stands for; None when it is no such name."""
    return int(name) if _SEQ_NAME.fullmatch(name) else None


def parse_name(name: str) -> tuple[int, int] | None:
    """(epoch, seq) of a checkpoint document name; None when it is not a canonical one."""
    seq = seq_of_name(name)
    if seq is not None:
        return 0, seq
    match = _EPOCH_NAME.fullmatch(name)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def checkpoint_document(checkpoint: Checkpoint, time: datetime) -> dict[str, str]:
    """The format-2 document of ``checkpoint`` (``prev`` None is written as 0; ``epoch`` only
    when it is not 0)."""
    doc = {
        "format": CHECKPOINT_FORMAT,
        "chain": checkpoint.chain,
        "seq": str(checkpoint.seq),
        "mac": checkpoint.mac.hex(),
        "prev": str(checkpoint.prev or 0),
        "time": time.isoformat(),
    }
    if checkpoint.epoch:
        doc["epoch"] = str(checkpoint.epoch)
    return doc


def parse_checkpoint(data: Mapping[str, str]) -> Checkpoint | None:
    """The checkpoint in ``data`` (format 2, or the legacy format 1); None when it is not a
    well-formed one."""
    try:
        version = data.get("format")
        if version not in (CHECKPOINT_FORMAT, LEGACY_FORMAT):
            return None
        chain = data["chain"]
        seq = int(data["seq"])
        mac = bytes.fromhex(data["mac"])
        prev = int(data["prev"]) if version == CHECKPOINT_FORMAT else None
        epoch = int(data.get("epoch", "0")) if version == CHECKPOINT_FORMAT else 0
    except (KeyError, ValueError, TypeError):
        return None
    if not isinstance(chain, str) or seq < 1 or len(mac) != 32 or epoch < 0:
        return None
    if prev is not None and not 0 <= prev < seq:
        return None
    return Checkpoint(chain, seq, mac, prev, epoch, _written(data.get("time")))


def _written(value: object) -> str:
    """``value`` when it is an ISO 8601 time (a checkpoint's ``time``), else ""."""
    if not isinstance(value, str) or len(value) > 40:
        return ""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return ""
    return value


def create_once(store: CheckpointStore, checkpoint: Checkpoint, *, deadline: Deadline) -> bool:
    """Write ``checkpoint`` once; True also when another writer of its chain (a replica sharing
    it) wrote the same one first, False when a different one is there."""
    name = checkpoint_name(checkpoint.seq, checkpoint.epoch)
    doc = checkpoint_document(checkpoint, datetime.now(UTC))
    if store.create(checkpoint.chain, name, doc, deadline=deadline):
        return True
    there = store.read(checkpoint.chain, name, deadline=deadline)
    found = None if there is None else parse_checkpoint(there)
    return found is not None and hmac.compare_digest(found.mac, checkpoint.mac)
