"""64-bit integers of every request are range-checked at the API edge (issue 16: UpdateConsent
with ``expected_version = 2**63-1`` overflowed in the SQLite driver and answered INTERNAL)."""

from __future__ import annotations

import pytest

from vault.api._ranges import MAX_INT64, check_int64_ranges
from vault.errors import InvalidInput
from vault.v1 import records_pb2 as pb
from vault.v1 import tokens_pb2 as tokens_pb


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), MAX_INT64 + 1])
@pytest.mark.parametrize("message", [pb.UpdateConsentRequest, pb.UpdateRecordRequest])
def test_a_version_the_database_cannot_increment_is_refused(
    value: int, message: type[pb.UpdateConsentRequest] | type[pb.UpdateRecordRequest]
) -> None:
    with pytest.raises(InvalidInput) as info:
        check_int64_ranges(message(tenant="demo", expected_version=value))
    assert info.value.field == "expected_version"
    assert str(value) not in info.value.message


@pytest.mark.parametrize("value", [0, 1, MAX_INT64, -MAX_INT64])
def test_values_in_range_pass(value: int) -> None:
    check_int64_ranges(pb.UpdateConsentRequest(expected_version=value))


def test_messages_without_64_bit_integers_are_skipped() -> None:
    # uint32 fields are checked by the services against their own bounds
    check_int64_ranges(tokens_pb.IssueGrantRequest(ttl_seconds=2**32 - 1, max_uses=2**32 - 1))
