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
from typing import Dict, Iterator, List, Sequence, Tuple

import tensorflow as tf

from beam_jobs.events import Event
from beam_jobs.sampling import NegativeSampler, stable_hash, user_rng
from beam_jobs.vocabulary import Vocabulary
from tfrs_din.schema import (ITEM_ID, LABEL, OOV_INDEX, USER_ID, history_name,
                             negative_name)

PROTOCOLS = ("next_item", "labeled")


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


def _int_feature(values: Sequence[int]) -> tf.train.Feature:
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
    feats[LABEL] = tf.train.Feature(
        float_list=tf.train.FloatList(value=[float(label)]))
    return tf.train.Example(
        features=tf.train.Features(feature=feats)).SerializeToString(
            deterministic=True)  # map order fixed: byte-identical on any worker

  def build(self, user: str, events: List[Event]) -> Iterator[Tuple[str, bytes]]:
    """Yields ("train" | "test", serialized Example) for a user's sorted events."""
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
