"""DIEN's auxiliary negatives drawn afresh for every training batch.

`beam_jobs.prepare` writes one auxiliary negative per behaviour of a user
(`neg_hist_<item feature>`), so every epoch sees the same negatives. The
official DIEN input pipeline (`script/data_iterator.py` in the DIEN
repository) draws them while reading: for every behaviour, items taken from
the list of all reviews' items (one entry per review, so popularity-
weighted) other than the behaviour's own item, anew on every pass. `FreshNegatives` does the same inside the `tf.data` pipeline:
a vectorised draw per batch, with stateless random ops whose key comes from
`tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`, so the
negatives are reproducible given the seed and differ from epoch to epoch.
"""

from __future__ import annotations

import math
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrs_din.features import FeatureSpec
from tfrs_din.schema import (FIRST_INDEX, HISTORY_LENGTH, OOV_INDEX,
                             PADDING_INDEX, history_name, negative_name)

ITEM_TABLE_FILE = "item_table.tsv"
DEFAULT_MAX_TRIES = 8
# Golden-ratio conjugate: the per-user rotation of the uniforms (see `sample`).
_WEYL = 0.6180339887498949


def load_item_features(directory: str, spec: FeatureSpec) -> np.ndarray:
  """The item table of a prepared directory, in index space.

  Row i holds, for the item of vocabulary index i, the index of each item
  feature in `spec.item_features` order: column 0 is i itself, the others
  its side features (e.g. its category) looked up in their vocabularies, as
  `beam_jobs.prepare` does for the negatives it writes. Row `PADDING_INDEX`
  is all padding and row `OOV_INDEX` all OOV; an item of the vocabulary
  missing from the table gets OOV side features (as in prepare).

  Args:
    directory: output directory of `beam_jobs.prepare` (with `item_table.tsv`:
      a header `item_id<TAB>side...`, then one raw item id and its raw side
      values per line).
    spec: the feature spec of the data.

  Returns:
    int64 array [item vocabulary size, number of item features].

  Raises:
    FileNotFoundError: the directory has no `item_table.tsv` (prepared by an
      older version).
    ValueError: the table's columns are not the spec's item features.
  """
  path = os.path.join(directory, ITEM_TABLE_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: aux_negatives='fresh' draws negatives from "
        f"the item table ({ITEM_TABLE_FILE}) that `tfrs-din prepare` writes; "
        "re-run prepare on the raw log with this version, or train with "
        "aux_negatives='prepared' (--aux_negatives prepared).")
  from beam_jobs.vocabulary import load_vocabularies  # pylint: disable=g-import-not-at-top
  names = [f.name for f in spec.item_features]
  vocabs = load_vocabularies(directory, names)
  with tf.io.gfile.GFile(path) as handle:
    rows = [line.split("\t") for line in handle.read().splitlines() if line]
  if not rows or rows[0] != names:
    raise ValueError(f"{ITEM_TABLE_FILE} in {directory!r} has columns "
                     f"{rows[0] if rows else []}, expected {names}")
  size = spec.item_features[0].vocab_size
  if vocabs[names[0]].size != size:
    raise ValueError(f"the vocabulary of {names[0]!r} in {directory!r} has "
                     f"{vocabs[names[0]].size} rows, the feature spec "
                     f"{size}")
  table = np.full([size, len(names)], OOV_INDEX, np.int64)
  table[:, 0] = np.arange(size)
  table[PADDING_INDEX] = PADDING_INDEX
  item_vocab = vocabs[names[0]]
  for row in rows[1:]:
    index = item_vocab.index(row[0])
    if index >= FIRST_INDEX:  # items below min_count share OOV: skipped
      table[index, 1:] = [vocabs[n].index(v) for n, v in zip(names[1:],
                                                              row[1:])]
  return table


def alias_table(probabilities: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Walker's alias table (Vose's construction) of a discrete distribution.

  A draw: i uniform in [0, n), then i with probability accept[i], else
  alias[i]. Each column i holds accept[i] / n of item i's mass and the rest
  of column i, (1 - accept[i]) / n, goes to alias[i]; the construction pairs
  an under-full column with an over-full item until every column is full,
  so P(j) = (accept[j] + sum_{i: alias[i] = j} (1 - accept[i])) / n = p_j.

  Args:
    probabilities: [n] non-negative, summing to 1.

  Returns:
    accept [n] float64 in [0, 1] and alias [n] int64 (indices into
    `probabilities`).

  Example:

  >>> accept, alias = alias_table(np.array([0.5, 0.25, 0.25]))
  >>> accept.tolist(), alias.tolist()
  ([1.0, 0.75, 0.75], [0, 0, 0])
  """
  n = len(probabilities)
  scaled = np.asarray(probabilities, np.float64) * n
  accept = np.ones(n, np.float64)
  alias = np.arange(n, dtype=np.int64)
  small = [i for i in range(n) if scaled[i] < 1.0]
  large = [i for i in range(n) if scaled[i] >= 1.0]
  while small and large:
    under, over = small.pop(), large.pop()
    accept[under], alias[under] = scaled[under], over
    scaled[over] -= 1.0 - scaled[under]
    (small if scaled[over] < 1.0 else large).append(over)
  # Left-overs are full up to rounding: accept[i] = 1 (their initial value).
  return accept, alias


class FreshNegatives:
  """Draws DIEN's auxiliary negatives for a batch of training examples.

  For every valid history position (t < hist_length) of row b, one item

      P(item j) = c_j ** power / sum_{k >= FIRST_INDEX} c_k ** power,
      j >= FIRST_INDEX (padding and OOV rows are never drawn),

  with c_j the item's count in the vocabulary (`power` 1 is the official
  code's popularity weighting, 0 uniform), conditioned on j not being in
  row b's history nor its candidate: rejection sampling, up to `max_tries`
  independent draws per position (Walker's alias method: O(1) per draw, two
  uniforms and two gathers), the first one outside the row is kept. One
  draw is made for every valid position, and `max_tries - 1` more only for
  the (few) positions whose first draw fell in the row. If all `max_tries`
  fall in the row (probability p ** max_tries, p the row's share of the
  item mass), the position gets
  the most frequent item outside the row (vocabulary indices are ordered by
  decreasing count, so that is the smallest index >= FIRST_INDEX outside the
  row); only when the row covers the whole catalogue is the first draw kept.
  Padded positions stay `PADDING_INDEX`. The other item features of a
  negative come from the item table (`load_item_features`).

  Args:
    item_features: [V, F] index table from `load_item_features` (column 0 is
      the item index, then its side features).
    frequencies: [V] item counts (the item id's vocabulary counts).
    feature_names: the F item feature names, item id first.
    power: exponent of the counts, finite and >= 0.
    max_tries: draws per position before the fallback.
    user_feature: the [B] user index feature whose value rotates a row's
      uniforms (see `sample`); None: no rotation.
  """

  def __init__(self, item_features: np.ndarray,
               frequencies: Sequence[float], feature_names: Sequence[str],
               power: float = 1.0, max_tries: int = DEFAULT_MAX_TRIES,
               user_feature: Optional[str] = None):
    item_features = np.asarray(item_features, np.int64)
    frequencies = np.asarray(frequencies, np.float64)
    try:
      valid = math.isfinite(float(power)) and float(power) >= 0
    except (TypeError, ValueError):
      valid = False
    if not valid:
      raise ValueError(f"aux_negative_power must be a finite number >= 0, "
                       f"got {power!r}")
    if int(max_tries) < 1:
      raise ValueError(f"max_tries must be >= 1, got {max_tries!r}")
    if item_features.ndim != 2 or item_features.shape[1] != len(feature_names):
      raise ValueError(f"item_features must be [V, {len(feature_names)}], got "
                       f"shape {item_features.shape}")
    if frequencies.shape != (item_features.shape[0],):
      raise ValueError(f"frequencies has shape {frequencies.shape}, expected "
                       f"({item_features.shape[0]},)")
    if item_features.shape[0] <= FIRST_INDEX:
      raise ValueError("cannot draw negatives: the item vocabulary has no "
                       "item besides padding and OOV")
    self.feature_names = list(feature_names)
    self.power = float(power)
    self.max_tries = int(max_tries)
    self.user_feature = user_feature
    counts = frequencies[FIRST_INDEX:]
    weights = np.where(counts > 0, np.power(np.maximum(counts, 1e-300),
                                            self.power), 0.0)
    if not weights.sum() > 0:
      raise ValueError("cannot draw negatives: every item has count 0")
    accept, alias = alias_table(weights / weights.sum())
    self._accept = tf.constant(accept, tf.float64)
    self._alias = tf.constant(alias + FIRST_INDEX, tf.int64)
    self._items = tf.constant(item_features)

  @classmethod
  def from_prepared(cls, directory: str, spec: FeatureSpec, power: float = 1.0,
                    max_tries: int = DEFAULT_MAX_TRIES) -> "FreshNegatives":
    """The sampler of a prepared directory (item table + item id counts).

    Args:
      directory: output directory of `beam_jobs.prepare`.
      spec: its feature spec, with frequencies (`load_feature_spec`).
      power: exponent of the counts.
      max_tries: draws per position before the fallback.
    """
    item = spec.item_features[0]
    if item.frequencies is None:
      raise ValueError(f"feature {item.name!r} has no frequencies: load the "
                       "spec with `load_feature_spec`")
    return cls(load_item_features(directory, spec), item.frequencies,
               [f.name for f in spec.item_features], power, max_tries,
               spec.group_key)

  def sample(self, features: Dict[str, tf.Tensor], seed: tf.Tensor
             ) -> Dict[str, tf.Tensor]:
    """`features` with `neg_hist_<f>` drawn for every item feature f.

    A pure function of (features, seed): the same seed gives the same
    negatives. The uniforms that pick the alias column of row b's draws are
    rotated by frac(user_b * phi) (phi the golden-ratio conjugate; user_b
    from `user_feature`, if any): each draw stays uniform, and rows of
    different users that would get the same uniforms (e.g. the same batch
    slot on two workers reading their own files, if their keys coincide)
    draw different items.

    Args:
      features: a parsed batch (`FeatureSpec.parse_examples`): `hist_<item
        id>` [B, L], `hist_length` [B] and the candidate's item id [B].
      seed: int64 [2], the key of the stateless draws.
    """
    item_id = self.feature_names[0]
    history = tf.cast(features[history_name(item_id)], tf.int64)   # [B, L]
    shape = tf.shape(history, out_type=tf.int64)
    length = shape[1]
    banned = tf.concat(
        [history, tf.reshape(tf.cast(features[item_id], tf.int64), [-1, 1])],
        axis=1)                                                    # [B, L + 1]
    rotation = None
    if self.user_feature is not None:
      rotation = tf.math.floormod(
          tf.cast(features[self.user_feature], tf.float64) * _WEYL, 1.0)
    size = tf.size(self._accept, out_type=tf.int64)

    def draw(rows, tries, key):  # [n] row indices -> [n, tries] items
      uniforms = tf.random.stateless_uniform(
          tf.stack([tf.size(rows, out_type=tf.int64), tries, 2]), key,
          dtype=tf.float64)
      column = uniforms[..., 0]
      if rotation is not None:
        column = tf.math.floormod(
            column + tf.gather(rotation, rows)[:, tf.newaxis], 1.0)
      column = tf.minimum(
          tf.cast(column * tf.cast(size, tf.float64), tf.int64), size - 1)
      return tf.where(uniforms[..., 1] < tf.gather(self._accept, column),
                      column + FIRST_INDEX, tf.gather(self._alias, column))

    def in_row(rows, values):  # [n] rows, [n, m] items -> [n, m] bool
      # One comparison per (value, item of the row): a few fused ops,
      # cheaper here than sorting the rows for a binary search.
      items = tf.gather(banned, rows)                             # [n, L + 1]
      return tf.reduce_any(
          values[:, :, tf.newaxis] == items[:, tf.newaxis, :], axis=2)

    keys = tf.random.experimental.stateless_split(seed, num=2)
    # Only the valid positions are drawn (histories are mostly padding).
    positions = tf.where(tf.sequence_mask(features[HISTORY_LENGTH], length))
    rows = positions[:, 0]                                              # [P]
    chosen = draw(rows, 1, keys[0])[:, 0]                               # [P]
    # The few positions whose first draw is in the row: max_tries - 1 more.
    redo = tf.where(in_row(rows, chosen[:, tf.newaxis])[:, 0])[:, 0]    # [R]
    redo_rows = tf.gather(rows, redo)
    if self.max_tries > 1:
      more = draw(redo_rows, self.max_tries - 1, keys[1])        # [R, T - 1]
      allowed = tf.logical_not(in_row(redo_rows, more))
      again = tf.gather(more, tf.argmax(tf.cast(allowed, tf.int32), axis=1,
                                        output_type=tf.int32), batch_dims=1)
      found = tf.reduce_any(allowed, axis=1)
    else:
      again = found = None
    # Fallback: the most frequent item outside the row (one of the first
    # L + 2 real indices is, unless the catalogue is smaller than that).
    top = tf.minimum(FIRST_INDEX + tf.range(length + 2),
                     size - 1 + FIRST_INDEX)
    top = tf.broadcast_to(top, tf.stack([tf.size(redo_rows, out_type=tf.int64),
                                         length + 2]))
    top_allowed = tf.logical_not(in_row(redo_rows, top))
    fallback = tf.gather(top, tf.argmax(tf.cast(top_allowed, tf.int32), axis=1,
                                        output_type=tf.int32), batch_dims=1)
    # Neither: the row holds the whole catalogue; the first draw is kept.
    fallback = tf.where(tf.reduce_any(top_allowed, axis=1), fallback,
                        tf.gather(chosen, redo))
    again = fallback if found is None else tf.where(found, again, fallback)
    chosen = tf.tensor_scatter_nd_update(chosen, redo[:, tf.newaxis], again)
    chosen = tf.tensor_scatter_nd_update(
        tf.fill(shape, tf.constant(PADDING_INDEX, tf.int64)), positions,
        chosen)                                                     # [B, L]
    sides = tf.gather(self._items, chosen)                       # [B, L, F]
    out = dict(features)
    for j, name in enumerate(self.feature_names):
      out[negative_name(name)] = sides[..., j]
    return out

  def apply(self, dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """`dataset` (parsed batches) with fresh negatives in every batch.

    Each batch is zipped with a key from `tf.data.Dataset.random(seed,
    rerandomize_each_iteration=True)`: the keys, hence the negatives, are
    the same on every run with the same seed (and the same global TensorFlow
    seed, as for the shuffling) and differ on each pass over the dataset
    (each epoch).

    Args:
      dataset: batches of parsed features.
      seed: seed of the key stream.
    """
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    zipped = tf.data.Dataset.zip((dataset, keys))
    return zipped.map(
        lambda features, key: self.sample(
            features, tf.stack([key, tf.constant(0x6e6567, tf.int64)])),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
