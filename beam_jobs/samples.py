"""One user's time-ordered events -> training and test `tf.train.Example`s.

Protocols (see SPEC section 8):
  * "next_item" (Amazon): behaviours b_1..b_n are the user's positive events
    in time order. Train samples predict b_{k+1} from b_1..b_k, k = 1..n-2;
    the test sample predicts b_n from b_1..b_{n-1}. Each positive is paired
    with `num_negatives` sampled items (same history, label 0).
  * "labeled" (MovieLens): every event with at least one earlier positive is a
    sample with its own label; the history is the earlier positives; users are
    split into train and test by a hash of their id.
In both, the most recent `max_history` behaviours are kept, and DIEN's
auxiliary negatives give one sampled item per behaviour position.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Dict, Iterator, List, Sequence, Tuple

from beam_jobs import encoding
from beam_jobs.events import Event, EventRecord
from beam_jobs.sampling import NegativeSampler, stable_hash, user_rng
from beam_jobs.options import PROTOCOLS
from beam_jobs.vocabulary import Vocabulary
from tfrs_din.schema import (ITEM_ID, LABEL, OOV_INDEX, USER_ID, history_name,
                             negative_name)



@dataclasses.dataclass
class SampleOptions:
  """Args:
    protocol: "next_item" or "labeled".
    max_history: behaviours kept per sample (most recent).
    num_negatives: sampled negatives per positive target (next_item).
    aux_negatives: write `neg_hist_*` for DIEN's auxiliary loss.
    test_fraction: share of users in the test split (labeled).
    seed: seed of every random choice.
  """
  protocol: str = "next_item"
  max_history: int = 50
  num_negatives: int = 1
  aux_negatives: bool = True
  test_fraction: float = 0.1
  seed: int = 0


def _int_feature(values: Sequence[int]):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


class UserSampleBuilder:
  """Builds the Examples of one user; `item_features` lists the item feature
  names after the item id, e.g. ["category_id"]."""

  def __init__(self, options: SampleOptions, vocabs: Dict[str, Vocabulary],
               item_feature_names: Sequence[str], user_feature_names: Sequence[str],
               sampler: NegativeSampler, item_side: Dict[int, Tuple[int, ...]]):
    self.options = options
    self.vocabs = vocabs
    self.item_feature_names = list(item_feature_names)
    self.user_feature_names = list(user_feature_names)
    self.sampler = sampler
    self.item_side = item_side  # item index -> indices of its side features

  def _item_row(self, event: Event) -> Tuple[int, ...]:
    feats = dict(event.item_features)
    return (self.vocabs[ITEM_ID].index(event.item),) + tuple(
        self.vocabs[n].index(feats[n]) for n in self.item_feature_names)

  def _side(self, item: int) -> Tuple[int, ...]:
    return self.item_side.get(item, (OOV_INDEX,) * len(self.item_feature_names))

  def _example(self, user_row: Dict[str, int], target: Tuple[int, ...],
               history: List[Tuple[int, ...]], negatives: List[Tuple[int, ...]],
               label: int) -> bytes:
    names = [ITEM_ID] + self.item_feature_names
    feats = {name: _int_feature([value]) for name, value in user_row.items()}
    for j, name in enumerate(names):
      feats[name] = _int_feature([target[j]])
      feats[history_name(name)] = _int_feature([h[j] for h in history])
      if self.options.aux_negatives:
        feats[negative_name(name)] = _int_feature([n[j] for n in negatives])
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    feats[LABEL] = tf.train.Feature(
        float_list=tf.train.FloatList(value=[float(label)]))
    return tf.train.Example(
        features=tf.train.Features(feature=feats)).SerializeToString(
            deterministic=True)  # map order fixed: byte-identical on any worker

  def build(self, user: str, events: List[Event]) -> Iterator[Tuple[str, bytes]]:
    """Yields ("train" | "test", serialized Example) for a user's sorted events.

    The reference implementation (one `tf.train.Example` message per sample);
    the job uses `encode`, which writes the same bytes faster.
    """
    opts = self.options
    rows = [self._item_row(e) for e in events]
    user_row = {USER_ID: self.vocabs[USER_ID].index(user)}
    for name in self.user_feature_names:
      user_row[name] = self.vocabs[name].index(dict(events[-1].user_features)[name])
    seen = {r[0] for r in rows}
    positives = [r for r, e in zip(rows, events) if e.label]
    aux_rng = user_rng(opts.seed, user, "aux")
    aux = [(i,) + self._side(i)
           for i in self.sampler.sample(aux_rng, seen, len(positives))]
    L = opts.max_history

    if opts.protocol == "next_item":
      target_rng = user_rng(opts.seed, user, "target")
      n = len(positives)
      for k in range(1, n):  # target index k (0-based) = b_{k+1}
        split = "test" if k == n - 1 else "train"
        history, negs = positives[max(0, k - L):k], aux[max(0, k - L):k]
        yield split, self._example(user_row, positives[k], history, negs, 1)
        for item in self.sampler.sample(target_rng, seen, opts.num_negatives):
          yield split, self._example(user_row, (item,) + self._side(item),
                                     history, negs, 0)
      return

    split = ("test" if stable_hash(opts.seed, user, "split") % 10_000
             < opts.test_fraction * 10_000 else "train")
    count = 0  # positives before the current event
    for row, event in zip(rows, events):
      if count:
        lo = max(0, count - L)
        yield split, self._example(user_row, row, positives[lo:count],
                                   aux[lo:count], event.label)
      count += event.label


SPLITS = ("train", "test")


class FastUserSampleBuilder(UserSampleBuilder):
  """`UserSampleBuilder` whose `encode` writes the bytes of `build` directly.

  Per user: the behaviours are encoded once and each history is a slice of
  them; each item's features are encoded once per builder (cached), and the
  user's features once per user. Negatives are drawn in one vectorised batch
  with the same generator stream (`NegativeSampler.sample_calls`).
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.item_names = [ITEM_ID] + self.item_feature_names
    names = list(self.item_names) + [history_name(n) for n in self.item_names]
    if self.options.aux_negatives:
      names += [negative_name(n) for n in self.item_names]
    names += [USER_ID] + self.user_feature_names + [LABEL]
    self.encoder = encoding.ExampleEncoder(names)
    self._order = {name: i for i, name in enumerate(self.encoder.names)}
    self._label = [self.encoder.entry(LABEL, encoding.float_feature([0.0])),
                   self.encoder.entry(LABEL, encoding.float_feature([1.0]))]
    self._target_cache: Dict[Tuple[int, int], bytes] = {}
    self._lookup = {n: self.vocabs[n].index for n in self.item_names}
    # Per feature name: packed length -> entry header (histories, negatives).
    self._headers: Dict[str, Dict[int, bytes]] = {
        n: {} for n in self.encoder.names}
    # (raw item, raw item features) -> the item's row of indices.
    self._row_cache: Dict[Tuple, Tuple[int, ...]] = {}
    # Record length -> a TFRecord frame's first 12 bytes (length, its CRC).
    self._frame_heads: Dict[int, bytes] = {}

  def _value_entry(self, j: int, value: int) -> bytes:
    key = (j, value)
    entry = self._target_cache.get(key)
    if entry is None:
      entry = self.encoder.entry(self.item_names[j],
                                 encoding.int64_feature(encoding.varint(value)))
      self._target_cache[key] = entry
    return entry

  def _rows(self, records: Sequence[EventRecord]) -> List[Tuple[int, ...]]:
    cache = self._row_cache
    rows = []
    for rec in records:
      key = (rec[1], rec[3])
      row = cache.get(key)
      if row is None:
        feats = dict(rec[3])
        row = (self._lookup[ITEM_ID](rec[1]),) + tuple(
            self._lookup[n](feats[n]) for n in self.item_feature_names)
        cache[key] = row
      rows.append(row)
    return rows

  def encode(self, user: str, records: Sequence[EventRecord]
             ) -> Dict[str, Tuple[int, bytes]]:
    """{split: (number of Examples, their TFRecord frames concatenated)}.

    The Examples and their order are those of `build` on the same events.

    Args:
      user: the raw user id.
      records: the user's time-ordered events as `EventRecord`s.

    Raises:
      ValueError: no negative can be drawn (every item is in the history).
    """
    opts = self.options
    enc = self.encoder
    rows = self._rows(records)
    user_entries = [(USER_ID, enc.entry(USER_ID, encoding.int64_feature(
        encoding.varint(self.vocabs[USER_ID].index(user)))))]
    if self.user_feature_names:
      last = dict(records[-1][4])
      for name in self.user_feature_names:
        user_entries.append((name, enc.entry(name, encoding.int64_feature(
            encoding.varint(self.vocabs[name].index(last[name]))))))
    seen = {r[0] for r in rows}
    positives = [r for r, rec in zip(rows, records) if rec[2]]
    aux_rng = user_rng(opts.seed, user, "aux")
    aux = [(i,) + self._side(i) for i in
           self.sampler.sample_calls(aux_rng, seen, len(positives), 1)[0]]
    L = opts.max_history
    width = len(self.item_names)
    hist = [encoding.packed_offsets([r[j] for r in positives])
            for j in range(width)]
    negs = ([encoding.packed_offsets([r[j] for r in aux]) for j in range(width)]
            if opts.aux_negatives else [])
    hist_names = [history_name(n) for n in self.item_names]
    neg_names = [negative_name(n) for n in self.item_names]
    order = self._order
    slots = [b""] * len(enc.names)
    for name, entry in user_entries:
      slots[order[name]] = entry
    label_slot = order[LABEL]
    target_slots = [order[n] for n in self.item_names]

    columns = [(order[name], name, self._headers[name]) + packed
               for name, packed in zip(hist_names + neg_names[:len(negs)],
                                       hist + negs)]
    header = enc.int64_entry_header

    def set_history(lo: int, hi: int) -> None:
      # enc.entry(name, int64_feature(blob[off[lo]:off[hi]])): the header of
      # an entry depends only on the packed length, so it is cached.
      for slot, name, headers, blob, off in columns:
        a = off[lo]
        b = off[hi]
        head = headers.get(b - a)
        if head is None:
          head = headers[b - a] = header(name, b - a)
        slots[slot] = head + blob[a:b]

    cache = self._target_cache
    labels = self._label
    crc = encoding._masked_crc  # pylint: disable=protected-access
    pack = struct.pack
    lengths = encoding._VARINTS  # pylint: disable=protected-access
    size = encoding.VARINT_TABLE_SIZE
    varint = encoding.varint
    heads = self._frame_heads

    def frame(target: Tuple[int, ...], label: int) -> bytes:
      # encoding.tfrecord(enc.example(slots)), inlined.
      for j in range(width):
        slots[target_slots[j]] = (cache.get((j, target[j]))
                                  or self._value_entry(j, target[j]))
      slots[label_slot] = labels[label]
      features = b"".join(slots)
      n = len(features)
      record = b"\x0a" + (lengths[n] if n < size else varint(n)) + features
      head = heads.get(len(record))
      if head is None:  # the length and its CRC: one per record length
        length = pack("<Q", len(record))
        head = heads[len(record)] = length + pack("<I", crc(length))
      return b"".join((head, record, pack("<I", crc(record))))

    out: Dict[str, List[bytes]] = {"train": [], "test": []}
    if opts.protocol == "next_item":
      n = len(positives)
      target_rng = user_rng(opts.seed, user, "target")
      negatives = self.sampler.sample_calls(target_rng, seen,
                                            opts.num_negatives, n - 1)
      for k in range(1, n):
        split = out["test" if k == n - 1 else "train"]
        set_history(max(0, k - L), k)
        split.append(frame(positives[k], 1))
        for item in negatives[k - 1]:
          split.append(frame((item,) + self._side(item), 0))
    else:
      split = out["test" if stable_hash(opts.seed, user, "split") % 10_000
                  < opts.test_fraction * 10_000 else "train"]
      count = 0
      for row, rec in zip(rows, records):
        if count:
          set_history(max(0, count - L), count)
          split.append(frame(row, rec[2]))
        count += rec[2]
    return {name: (len(frames), b"".join(frames))
            for name, frames in out.items() if frames}
