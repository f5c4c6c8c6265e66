"""Test doubles shipped beside the real implementations (unit tests of upper layers only)."""

from vault.testing.fake_kms import InMemoryKeyWrapper

__all__ = ["InMemoryKeyWrapper"]
