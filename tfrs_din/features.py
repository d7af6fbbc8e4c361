"""One declarative description of a CTR data set's features.

The same `FeatureSpec` drives parsing of the preprocessed TFRecords, the
models' embedding tables and inputs, and the serving signatures.

The data contract shared with `beam_jobs` (names, prefixes, padding and OOV
indices) is `tfrs_din.schema`: candidate feature `f` has a behaviour sequence
`hist_f` that shares `f`'s embedding table, optionally DIEN's auxiliary
negatives `neg_hist_f`, and `hist_length` counts the valid behaviours.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrs_din.schema import (HISTORY_LENGTH, HISTORY_PREFIX, LABEL,
                             NEGATIVE_PREFIX, OOV_INDEX, PADDING_INDEX)

__all__ = ["CategoricalFeature", "FeatureSpec"]


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

  def parse_examples(self, serialized: tf.Tensor, with_negatives: bool = False,
                     with_label: bool = True) -> Dict[str, tf.Tensor]:
    """Parses a batch of serialized `tf.train.Example` into model features."""
    parsed = tf.io.parse_example(
        serialized, self.example_parsing_spec(with_negatives, with_label))
    features = {}
    for name, value in parsed.items():
      if isinstance(value, tf.RaggedTensor):
        # Keep the most recent behaviours (sequences are oldest first).
        value = value[:, -self.max_history:]
        if name == HISTORY_PREFIX + self.item_id:
          features[HISTORY_LENGTH] = value.row_lengths()
        value = value.to_tensor(default_value=PADDING_INDEX,
                                shape=[None, self.max_history])
      features[name] = value
    return features

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
