"""The hash chain: canonical record bytes, record hashes and the checker that finds the first bad record.

A record's canonical bytes are the MessagePack encoding of the array `[seq, ts, command]`, where the
command is encoded by msgspec with `order="deterministic"`: struct fields in declaration order (the
tag field `kind` first), sets and dict keys sorted, integers in their shortest form. The record hash
is `sha256(prev_hash + canonical_bytes)`; the first record's `prev_hash` is `GENESIS_HASH`.

The journal stores the command's own encoding, so the canonical bytes are rebuilt from the stored
columns (`b"\\x93" + msgpack(seq) + msgpack(ts) + command`, which is exactly how MessagePack encodes a
3-element array): tampering with any of seq, ts or command changes the hash.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from tradesim.domain import Command

GENESIS_HASH = bytes(32)
"""`prev_hash` of record 1: 32 zero bytes."""

HASH_SIZE = 32

_ENCODER = msgspec.msgpack.Encoder(order="deterministic")
_COMMAND_DECODER: msgspec.msgpack.Decoder[Command] = msgspec.msgpack.Decoder(Command)
_ARRAY3 = b"\x93"

Problem = Literal["sequence_gap", "broken_link", "hash_mismatch", "undecodable"]


def encode_command(command: Command) -> bytes:
    """The stored (and hashed) encoding of one command."""
    return _ENCODER.encode(command)


def decode_command(data: bytes) -> Command:
    """Inverse of `encode_command`; raises `msgspec.DecodeError` or `msgspec.ValidationError`."""
    return _COMMAND_DECODER.decode(data)


def encode_value(value: object) -> bytes:
    """Deterministic MessagePack for anything msgspec can encode (used for snapshots)."""
    return _ENCODER.encode(value)


def canonical_bytes(seq: int, ts: int, command_bytes: bytes) -> bytes:
    """MessagePack of `[seq, ts, command]`, given the command's own encoding."""
    return _ARRAY3 + _ENCODER.encode(seq) + _ENCODER.encode(ts) + command_bytes


def record_hash(prev_hash: bytes, seq: int, ts: int, command_bytes: bytes) -> bytes:
    """`sha256(prev_hash + canonical_bytes(seq, ts, command))`."""
    return hashlib.sha256(prev_hash + canonical_bytes(seq, ts, command_bytes)).digest()


class RawRecord(msgspec.Struct, frozen=True, gc=False):
    """A journal row exactly as stored, before any decoding or checking."""

    seq: int
    ts: int
    command: bytes
    prev_hash: bytes
    hash: bytes


class BadRecord(msgspec.Struct, frozen=True):
    """The first record that does not match: its seq, what is wrong, and the details."""

    seq: int
    problem: Problem
    detail: str

    def __str__(self) -> str:
        return f"record seq {self.seq}: {self.problem.replace('_', ' ')}: {self.detail}"


class VerifyReport(msgspec.Struct, frozen=True):
    """Outcome of a chain verification: `count` good records, then `bad` (None when all match)."""

    count: int
    head_hash: bytes
    bad: BadRecord | None = None

    @property
    def ok(self) -> bool:
        return self.bad is None


class ChainChecker:
    """Feeds on raw records in seq order and reports the first one that breaks the chain.

    Starts at `(next_seq, prev_hash)`: (1, GENESIS_HASH) for a whole journal, or the seq after a
    snapshot and the hash of the snapshot's record for a tail.
    """

    def __init__(self, next_seq: int = 1, prev_hash: bytes = GENESIS_HASH) -> None:
        self.next_seq = next_seq
        self.prev_hash = prev_hash
        self.count = 0
        self.command: Command | None = None
        """The decoded command of the last record that passed."""

    def check(self, row: RawRecord) -> BadRecord | None:
        """None if `row` extends the chain (and then advances), else what is wrong with it."""
        expected = self.next_seq
        if row.seq != expected:
            detail = (f"expected seq {expected}, found seq {row.seq}" if row.seq > expected
                      else f"seq {row.seq} out of order after seq {expected - 1}")
            return BadRecord(expected, "sequence_gap", detail)
        if len(row.hash) != HASH_SIZE or len(row.prev_hash) != HASH_SIZE:
            return BadRecord(row.seq, "undecodable",
                             f"truncated hash fields ({len(row.prev_hash)}/{len(row.hash)} bytes, "
                             f"expected {HASH_SIZE})")
        try:
            command = decode_command(row.command)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return BadRecord(row.seq, "undecodable", f"command bytes do not decode ({exc})")
        computed = record_hash(row.prev_hash, row.seq, row.ts, row.command)
        if computed != row.hash:
            return BadRecord(row.seq, "hash_mismatch",
                             f"stored hash {row.hash.hex()[:16]}… but content hashes to "
                             f"{computed.hex()[:16]}…")
        if row.prev_hash != self.prev_hash:
            return BadRecord(row.seq, "broken_link",
                             f"prev_hash {row.prev_hash.hex()[:16]}… does not equal the hash of the previous "
                             f"record {self.prev_hash.hex()[:16]}…")
        self.prev_hash = row.hash
        self.command = command
        self.next_seq = expected + 1
        self.count += 1
        return None

    def report(self, bad: BadRecord | None = None) -> VerifyReport:
        return VerifyReport(count=self.count, head_hash=self.prev_hash, bad=bad)
