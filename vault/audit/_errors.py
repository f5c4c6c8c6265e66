"""The audit log's one error: it could not be written, so the call must fail."""

from __future__ import annotations

from vault.errors import Unavailable, VaultServiceError


class AuditUnavailable(Unavailable):
    """The audit row could not be written (audit key unobtainable, or the insert refused).

    An :class:`~vault.errors.Unavailable`, so the API answers UNAVAILABLE: the call fails and
    nothing is revealed. Database outages surface as
    :class:`~vault.errors.DatabaseUnavailable` instead, which is also ``Unavailable``.
    """

    reason = "audit_unavailable"


class ReanchorRefused(VaultServiceError):
    """A re-anchor was refused: the chain needs none, or something other than a restore is wrong
    with it (a broken row, a deleted checkpoint), or it moved meanwhile. The message names seqs
    and problems only."""

    reason = "reanchor_refused"
