"""`tf.train.Example` and TFRecord bytes written by hand, for speed.

Building a `tf.train.Example` message per sample (a `Feature` per field, then
`SerializeToString(deterministic=True)`) was the largest cost of the job. The
wire format of the Examples we write is simple, so we emit the same bytes
directly: pieces that repeat (the user's features, each item's features, the
label) are encoded once and reused, and a history is a slice of the user's
behaviours encoded once. `tests/beam_jobs/test_fast_path.py` checks the bytes
against `tf.train.Example(...).SerializeToString(deterministic=True)`.

Wire format (protobuf; deterministic serialisation sorts map keys):
  Example   { 1: Features }
  Features  { 1: repeated MapEntry }             map<string, Feature>
  MapEntry  { 1: key (string), 2: Feature }
  Feature   { 2: FloatList | 3: Int64List }
  Int64List { 1: packed varints }   FloatList { 1: packed little-endian float32 }
"""

from __future__ import annotations

import struct
from typing import Dict, Iterable, List, Sequence

try:
  from google_crc32c import value as _crc32c  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - the pure-Python fallback of Beam
  from apache_beam.io.tfrecordio import _default_crc32c_fn as _crc32c


def varint(value: int) -> bytes:
  """Protobuf base-128 varint of a non-negative int (or int64 two's complement).

  Args:
    value: the integer.
  """
  if 0 <= value < 0x80:
    return bytes((value,))
  value &= 0xFFFFFFFFFFFFFFFF
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]
# Varints of 0 .. 2**16 - 1 (one to three bytes), looked up instead of
# computed: ids of vocabularies up to 65,536 entries and every length field.
VARINT_TABLE_SIZE = 1 << 16
_VARINTS = _SMALL + [varint(i) for i in range(0x80, VARINT_TABLE_SIZE)]


def _len(n: int) -> bytes:
  return _VARINTS[n] if n < VARINT_TABLE_SIZE else varint(n)


def int64_feature(packed: bytes) -> bytes:
  """A `Feature` holding an Int64List, from its packed varints."""
  if not packed:
    return b"\x1a\x00"  # int64_list {} : an empty list is an empty message
  inner = b"\x0a" + _len(len(packed)) + packed
  return b"\x1a" + _len(len(inner)) + inner


def float_feature(values: Sequence[float]) -> bytes:
  """A `Feature` holding a FloatList."""
  if not values:
    return b"\x12\x00"
  packed = struct.pack(f"<{len(values)}f", *values)
  inner = b"\x0a" + _len(len(packed)) + packed
  return b"\x12" + _len(len(inner)) + inner


class ExampleEncoder:
  """Serialises Examples whose features are known by name up front.

  Args:
    names: every feature name of the Examples (any order); each Example passes
      a `Feature` payload (from `int64_feature`/`float_feature`) per name.
  """

  def __init__(self, names: Iterable[str]):
    # Deterministic serialisation orders map entries by key (UTF-8 bytes).
    self.names = sorted(set(names), key=lambda n: n.encode("utf-8"))
    self._prefix = {}
    for name in self.names:
      key = name.encode("utf-8")
      self._prefix[name] = b"\x0a" + _len(len(key)) + key + b"\x12"

  def entry(self, name: str, feature: bytes) -> bytes:
    """A framed map entry (`Features` field 1) for `name`; cacheable."""
    body = self._prefix[name] + _len(len(feature)) + feature
    return b"\x0a" + _len(len(body)) + body

  def int64_entry_header(self, name: str, n: int) -> bytes:
    """The bytes before `packed` in `entry(name, int64_feature(packed))`
    for any `packed` of `n` bytes: they depend only on the length, so a
    caller encoding many histories caches them per length."""
    entry = self.entry(name, int64_feature(bytes(n)))
    return entry[:len(entry) - n]

  def example(self, entries: Sequence[bytes]) -> bytes:
    """The Example from framed entries given in `self.names` order."""
    features = b"".join(entries)
    return b"\x0a" + _len(len(features)) + features

  def example_from(self, features: Dict[str, bytes]) -> bytes:
    """The Example from `{name: Feature payload}` (slow path; for tests)."""
    return self.example([self.entry(n, features[n]) for n in self.names])


def packed_offsets(values: Sequence[int]):
  """Varints of `values` concatenated, and the byte offset of each value.

  `blob[offsets[i]:offsets[j]]` is the packed encoding of `values[i:j]`.

  Args:
    values: non-negative integers.
  """
  offsets: List[int] = [0]
  parts = []
  position = 0
  table = _VARINTS
  size = VARINT_TABLE_SIZE
  for value in values:
    piece = table[value] if 0 <= value < size else varint(value)
    parts.append(piece)
    position += len(piece)
    offsets.append(position)
  return b"".join(parts), offsets


def _masked_crc(data: bytes) -> int:
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(record: bytes) -> bytes:
  """One TFRecord frame: length, masked CRC32C of the length, data, its CRC."""
  length = struct.pack("<Q", len(record))
  return b"".join((length, struct.pack("<I", _masked_crc(length)), record,
                   struct.pack("<I", _masked_crc(record))))
