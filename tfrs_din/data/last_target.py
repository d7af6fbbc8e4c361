"""Which training records hold each user's last training target.

Under the `next_item` protocol the test split holds every user's last
behaviour, b_n, predicted from b_1..b_{n-1}: the test users are users the
model trained on. A validation split that mirrors it holds out each user's
last *training* target, b_{n-1} (its positive and its sampled negatives), and
trains on the rest (`make_dataset(holdout_by="last")`).

`beam_jobs.prepare` writes a user's records together and in time order
(oldest target first; a target's positive and negatives share its history),
so a user's last target is the trailing run of that user's records whose
history equals the user's final record's history.
"""

from __future__ import annotations

import os
from typing import Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrs_din.features import HISTORY_LENGTH, HISTORY_PREFIX, FeatureSpec

_CACHE: Dict[Tuple, Tuple[np.ndarray, np.ndarray]] = {}


def _history_hash(history: tf.Tensor) -> tf.Tensor:
  """[B, T] int64 ids -> [B] int64 hash (wrapping arithmetic)."""
  weights = tf.constant(
      np.random.default_rng(0).integers(1, 2**31, size=history.shape[1]),
      tf.int64)
  return tf.reduce_sum(history * weights, axis=1)


def last_target_flags(files: Sequence[str], spec: FeatureSpec,
                      batch_size: int = 4096
                      ) -> Tuple[np.ndarray, np.ndarray]:
  """One boolean per record of `files` (read in the given order), True for
  the records of each user's last target; and the number of records per file.

  One pass over the records, reading the user, the history length and a hash
  of the history; cached per file list.

  Args:
    files: TFRecord files of a split, in a fixed order.
    spec: the `FeatureSpec` (its group key names the user).
    batch_size: records parsed per step of the pass.
  """
  if spec.group_key is None:
    raise ValueError("a last-target holdout needs the feature spec's "
                     "group_key (the user feature)")
  key = (tuple(files), tuple(os.path.getmtime(f) if os.path.exists(f) else 0
                             for f in files), spec.max_history)
  if key in _CACHE:
    return _CACHE[key]
  history_name = HISTORY_PREFIX + spec.item_id
  users, lengths, hashes, counts = [], [], [], []
  for path in files:
    ds = tf.data.TFRecordDataset(path, compression_type="GZIP")
    ds = ds.batch(batch_size).map(
        lambda s: spec.parse_examples(s, with_negatives=False),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    count = 0
    for features in ds:
      users.append(features[spec.group_key].numpy())
      lengths.append(features[HISTORY_LENGTH].numpy())
      hashes.append(_history_hash(features[history_name]).numpy())
      count += len(users[-1])
    counts.append(count)
  counts = np.asarray(counts, np.int64)
  if not users:
    return np.zeros([0], bool), counts
  users, lengths, hashes = (np.concatenate(v) for v in (users, lengths, hashes))
  # The last record of each user, and whether each record shares its history.
  order = np.arange(len(users))
  unique, inverse = np.unique(users, return_inverse=True)
  last = np.full(len(unique), -1)
  np.maximum.at(last, inverse, order)
  final = last[inverse]
  same = (lengths == lengths[final]) & (hashes == hashes[final])
  # Only the trailing run: a record after which the user's records all share
  # the final history (earlier targets with an equal window are not last).
  breaks = np.where(~same, order, -1)
  last_break = np.full(len(unique), -1)
  np.maximum.at(last_break, inverse, breaks)
  flags = same & (order > last_break[inverse])
  _CACHE[key] = flags, counts
  return flags, counts
