"""One declarative description of a CTR data set's features.

The same `FeatureSpec` drives parsing of the preprocessed TFRecords, the
models' embedding tables and inputs, and the serving signatures.

The data contract shared with `beam_jobs` (names, prefixes, padding and OOV
indices) is `tfrs_din.schema`: candidate feature `f` has a behaviour sequence
`hist_f` that shares `f`'s embedding table, optionally DIEN's auxiliary
negatives `neg_hist_f`, and `hist_length` counts the valid behaviours.

Sequences are padded at the end, so a batch needs only as many columns as its
longest history: `FeatureSpec.parse_examples(padding=...)` pads to
`max_history` (the default, the serving contract), to the batch's longest
history, or to that rounded up to a bucket boundary, so that the models'
per-behaviour work follows the histories that exist while the number of
distinct batch shapes stays bounded.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tfrs_din.schema import (HISTORY_LENGTH, HISTORY_PREFIX, LABEL,
                             NEGATIVE_PREFIX, OOV_INDEX, PADDING_INDEX)

__all__ = ["CategoricalFeature", "FeatureSpec", "DEFAULT_BUCKET_BOUNDARIES"]

# Upper bounds of the history-length buckets a batch's width is rounded up to
# (`FeatureSpec.bucket_boundaries` keeps those below `max_history` and ends
# with it). Doubling widths: a batch pays at most about twice its longest
# history, and at most five distinct widths (graph shapes) exist.
DEFAULT_BUCKET_BOUNDARIES = (4, 8, 16, 32)
# `padding` of `FeatureSpec.parse_examples` / `pad_sequences`: one of these
# names, a sequence of bucket boundaries, or None (ragged sequences).
PADDINGS = ("max_history", "longest")
Padding = Union[None, str, Sequence[int]]


@dataclasses.dataclass
class CategoricalFeature:
  """A categorical feature with its own embedding table.

  Args:
    name: feature name, e.g. "item_id".
    vocab_size: rows of the table, padding and OOV rows included.
    embedding_dim: width of the embedding.
    frequencies: optional [vocab_size] id counts in the training data (the n_j
      of mini-batch aware regularisation); not part of the JSON config.
  """
  name: str
  vocab_size: int
  embedding_dim: int = 18
  frequencies: Optional[np.ndarray] = dataclasses.field(
      default=None, repr=False, compare=False)

  def __post_init__(self):
    if self.vocab_size < 2:
      raise ValueError(f"feature {self.name!r}: vocab_size must be >= 2 "
                       f"(padding and OOV), got {self.vocab_size}.")
    if self.frequencies is not None:
      self.frequencies = np.asarray(self.frequencies, np.float32)
      if self.frequencies.shape != (self.vocab_size,):
        raise ValueError(
            f"feature {self.name!r}: frequencies has shape "
            f"{self.frequencies.shape}, expected ({self.vocab_size},).")

  def to_dict(self) -> dict:
    return dict(name=self.name, vocab_size=self.vocab_size,
                embedding_dim=self.embedding_dim)


@dataclasses.dataclass
class FeatureSpec:
  """Feature groups of a DIN/DIEN data set.

  Args:
    user_features: user profile features, e.g. [user_id].
    item_features: candidate features whose behaviour sequences share their
      tables, e.g. [item_id, category_id]; the first one is the item id.
    max_history: behaviours kept per example (the most recent ones).
    numeric_features: names of optional float features.
    label: name of the 0/1 label.
    group_key: user feature that groups impressions for GAUC.

  Example:

  >>> spec = FeatureSpec(user_features=[CategoricalFeature("user_id", 100)],
  ...                    item_features=[CategoricalFeature("item_id", 50),
  ...                                   CategoricalFeature("category_id", 8)],
  ...                    max_history=20)
  >>> sorted(spec.serving_signature())[:3]
  ['category_id', 'hist_category_id', 'hist_item_id']
  """
  user_features: List[CategoricalFeature]
  item_features: List[CategoricalFeature]
  max_history: int = 50
  numeric_features: Sequence[str] = ()
  label: str = LABEL
  group_key: Optional[str] = None

  def __post_init__(self):
    if not self.item_features:
      raise ValueError("FeatureSpec needs at least one item feature.")
    if self.max_history < 1:
      raise ValueError(f"max_history must be >= 1, got {self.max_history}.")
    names = [f.name for f in self.user_features + self.item_features]
    names += list(self.numeric_features)
    if len(set(names)) != len(names):
      raise ValueError(f"feature names must be unique, got {names}.")
    if self.group_key is None and self.user_features:
      self.group_key = self.user_features[0].name
    self.numeric_features = tuple(self.numeric_features)

  # Names --------------------------------------------------------------------
  @property
  def item_id(self) -> str:
    return self.item_features[0].name

  def history_names(self) -> List[str]:
    return [HISTORY_PREFIX + f.name for f in self.item_features]

  def negative_names(self) -> List[str]:
    return [NEGATIVE_PREFIX + f.name for f in self.item_features]

  # Tensor specs -------------------------------------------------------------
  def serving_signature(self) -> Dict[str, tf.TensorSpec]:
    """Inputs of a prediction: padded dense tensors plus history lengths."""
    sig = {f.name: tf.TensorSpec([None], tf.int64, f.name)
           for f in self.user_features + self.item_features}
    for name in self.history_names():
      sig[name] = tf.TensorSpec([None, None], tf.int64, name)
    sig[HISTORY_LENGTH] = tf.TensorSpec([None], tf.int64, HISTORY_LENGTH)
    for name in self.numeric_features:
      sig[name] = tf.TensorSpec([None], tf.float32, name)
    return sig

  def example_parsing_spec(self, with_negatives: bool = False,
                           with_label: bool = True) -> dict:
    """`tf.io.parse_example` features of the TFRecords `beam_jobs` writes.

    Serving requests carry no label: use `with_label=False` for them.
    """
    spec = {f.name: tf.io.FixedLenFeature([], tf.int64)
            for f in self.user_features + self.item_features}
    names = self.history_names() + (self.negative_names() if with_negatives
                                    else [])
    for name in names:
      spec[name] = tf.io.RaggedFeature(tf.int64)
    for name in self.numeric_features:
      spec[name] = tf.io.FixedLenFeature([], tf.float32, default_value=0.0)
    if with_label:
      spec[self.label] = tf.io.FixedLenFeature([], tf.float32)
    return spec

  def bucket_boundaries(
      self, boundaries: Sequence[int] = DEFAULT_BUCKET_BOUNDARIES
      ) -> Tuple[int, ...]:
    """The bucket upper bounds in use: `boundaries` below `max_history`,
    sorted and unique, then `max_history`.

    Raises:
      ValueError: a boundary is not an integer >= 1.

    Example:

    >>> spec = FeatureSpec([], [CategoricalFeature("item_id", 9)],
    ...                    max_history=20)
    >>> spec.bucket_boundaries((16, 4, 8, 32, 8))
    (4, 8, 16, 20)
    """
    values = list(boundaries)
    for value in values:
      if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
          or value < 1):
        raise ValueError("bucket boundaries must be integers >= 1, got "
                         f"{tuple(values)!r}")
    kept = sorted({int(v) for v in values if v < self.max_history})
    return tuple(kept) + (self.max_history,)

  def _check_padding(self, padding: Padding) -> Optional[Tuple[int, ...]]:
    """None, or the widths a batch may take under `padding` (checked)."""
    if padding is None:
      return None
    if isinstance(padding, str):
      if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, a sequence of "
                         f"bucket boundaries or None, got {padding!r}")
      return (self.max_history,) if padding == "max_history" else ()
    return self.bucket_boundaries(padding)

  def padded_width(self, lengths: tf.Tensor, padding: Padding = "max_history"
                   ) -> tf.Tensor:
    """The number of columns of a batch whose histories have `lengths`.

    "max_history": `max_history`; "longest": the longest of `lengths` (at
    least 1, so that no batch has zero columns); a sequence of bucket
    boundaries: the longest rounded up to the first of
    `bucket_boundaries(padding)` at or above it.

    Args:
      lengths: [B] history lengths, each <= `max_history`.
      padding: see above.

    Returns:
      int64 scalar.
    """
    widths = self._check_padding(padding)
    if widths is None:
      raise ValueError("padded_width needs a padding, got None")
    longest = tf.reduce_max(tf.concat([tf.cast(lengths, tf.int64),
                                       tf.ones([1], tf.int64)], 0))
    if not widths:                                           # "longest"
      return longest
    bounds = tf.constant(widths, tf.int64)
    index = tf.searchsorted(bounds, longest[tf.newaxis], side="left")[0]
    return tf.gather(bounds, tf.minimum(index, len(widths) - 1))

  def pad_sequences(self, features: Dict[str, tf.Tensor],
                    padding: Padding = "max_history") -> Dict[str, tf.Tensor]:
    """`features` with every ragged sequence padded to `padded_width`.

    All of a batch's sequences (`hist_*` and `neg_hist_*`) get the same
    width, taken from its `hist_length`; positions past a row's
    `hist_length` hold `PADDING_INDEX`, and the models mask them.

    Args:
      features: a batch with ragged [B, (n)] sequences, as
        `parse_examples(padding=None)` returns it.
      padding: see `padded_width`.
    """
    widths = self._check_padding(padding)
    if widths is None:
      return dict(features)
    if widths == (self.max_history,):
      shape = [None, self.max_history]         # static: [B, max_history]
    else:
      shape = tf.stack([-1, self.padded_width(features[HISTORY_LENGTH],
                                              padding)])
    out = {}
    for name, value in features.items():
      if isinstance(value, tf.RaggedTensor):
        value = value.to_tensor(default_value=PADDING_INDEX, shape=shape)
      out[name] = value
    return out

  def parse_examples(self, serialized: tf.Tensor, with_negatives: bool = False,
                     with_label: bool = True, padding: Padding = "max_history"
                     ) -> Dict[str, tf.Tensor]:
    """Parses a batch of serialized `tf.train.Example` into model features.

    Sequences keep their `max_history` most recent behaviours, and
    `hist_length` counts them.

    Args:
      serialized: [B] serialized examples.
      with_negatives: also parse DIEN's auxiliary negatives `neg_hist_*`.
      with_label: parse the label (serving requests carry none).
      padding: width of the [B, L] sequences: "max_history" (L =
        `max_history` for every batch: what the serving signatures get),
        "longest" (L = the batch's longest history), a sequence of bucket
        boundaries (the longest rounded up to the next boundary, see
        `padded_width`), or None: ragged [B, (n)] sequences, unpadded.
    """
    self._check_padding(padding)
    parsed = tf.io.parse_example(
        serialized, self.example_parsing_spec(with_negatives, with_label))
    features = {}
    for name, value in parsed.items():
      if isinstance(value, tf.RaggedTensor):
        # Keep the most recent behaviours (sequences are oldest first).
        value = value[:, -self.max_history:]
        if name == HISTORY_PREFIX + self.item_id:
          features[HISTORY_LENGTH] = value.row_lengths()
      features[name] = value
    return self.pad_sequences(features, padding)

  def dummy_features(self, batch_size: int = 2, with_negatives: bool = True
                     ) -> Dict[str, tf.Tensor]:
    """A small valid batch, used to build models (e.g. when loading)."""
    feats = {f.name: tf.fill([batch_size], tf.constant(OOV_INDEX, tf.int64))
             for f in self.user_features + self.item_features}
    names = self.history_names() + (self.negative_names() if with_negatives
                                    else [])
    for name in names:
      feats[name] = tf.fill([batch_size, self.max_history],
                            tf.constant(OOV_INDEX, tf.int64))
    feats[HISTORY_LENGTH] = tf.fill([batch_size],
                                    tf.constant(self.max_history, tf.int64))
    for name in self.numeric_features:
      feats[name] = tf.zeros([batch_size])
    feats[self.label] = tf.zeros([batch_size])
    return feats

  # Serialisation ------------------------------------------------------------
  def to_dict(self) -> dict:
    return dict(user_features=[f.to_dict() for f in self.user_features],
                item_features=[f.to_dict() for f in self.item_features],
                max_history=self.max_history,
                numeric_features=list(self.numeric_features),
                label=self.label, group_key=self.group_key)

  @classmethod
  def from_dict(cls, config: dict,
                frequencies: Optional[Dict[str, np.ndarray]] = None
                ) -> "FeatureSpec":
    frequencies = frequencies or {}

    def make(d):
      return CategoricalFeature(frequencies=frequencies.get(d["name"]), **d)

    return cls(user_features=[make(d) for d in config["user_features"]],
               item_features=[make(d) for d in config["item_features"]],
               max_history=config["max_history"],
               numeric_features=tuple(config.get("numeric_features", ())),
               label=config.get("label", LABEL),
               group_key=config.get("group_key"))

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)
