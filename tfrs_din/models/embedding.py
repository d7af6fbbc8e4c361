"""Embedding of the feature groups, shared by candidate and behaviours."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import tensorflow as tf

from tfrs_din.features import (HISTORY_LENGTH, HISTORY_PREFIX, NEGATIVE_PREFIX,
                               FeatureSpec)
from tfrs_din.regularization import MiniBatchAwareL2

REGULARIZATIONS = (None, "mba", "l2")


@dataclasses.dataclass
class EmbeddedFeatures:
  """Embedded inputs of a batch.

  Attributes:
    user: [B, Du] concatenated user-feature embeddings (Du may be 0).
    candidate: [B, N, Di] concatenated item-feature embeddings of N candidates.
    history: [B, L, Di] behaviour embeddings.
    mask: [B, L] boolean, True at valid behaviours.
    numeric: [B, n] numeric features (n may be 0).
  """
  user: tf.Tensor
  candidate: tf.Tensor
  history: tf.Tensor
  mask: tf.Tensor
  numeric: tf.Tensor


class FeatureEmbedder(tf.keras.layers.Layer):
  """Looks up every feature group; one table per categorical feature.

  The item representation is the concatenation of its features' embeddings,
  [item_emb ; cat_emb ; ...], for the candidate and for every behaviour alike.

  Args:
    spec: the `FeatureSpec`.
    regularization: None, "mba" (mini-batch aware, rows in the batch scaled by
      1/n_j) or "l2" (every row of every table, each step: O(vocabulary)).
    l2: lambda of the regularisation.
  """

  def __init__(self, spec: FeatureSpec, regularization: Optional[str] = None,
               l2: float = 0.01, **kwargs):
    super().__init__(**kwargs)
    if regularization not in REGULARIZATIONS:
      raise ValueError(f"regularization must be one of {REGULARIZATIONS}, "
                       f"got {regularization!r}.")
    self.spec = spec
    self.regularization = regularization
    self.l2 = l2
    self.tables = {}
    self.regularizers = {}
    for feature in spec.user_features + spec.item_features:
      self.tables[feature.name] = tf.keras.layers.Embedding(
          feature.vocab_size, feature.embedding_dim,
          embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.05),
          name=f"{feature.name}_embedding")
      if regularization == "mba":
        self.regularizers[feature.name] = MiniBatchAwareL2(
            feature.frequencies, l2=l2, vocab_size=feature.vocab_size,
            name=f"{feature.name}_mba")

  def embed_items(self, features: Dict[str, tf.Tensor], prefix: str = ""
                  ) -> tf.Tensor:
    """[..., Di] embedding of the item features named `prefix + name`."""
    return tf.concat([self.tables[f.name](features[prefix + f.name])
                      for f in self.spec.item_features], axis=-1)

  def embed_user(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    parts = [self.tables[f.name](features[f.name])
             for f in self.spec.user_features]
    if not parts:
      batch = tf.shape(features[HISTORY_PREFIX + self.spec.item_id])[0]
      return tf.zeros([batch, 0])
    return tf.concat(parts, axis=-1)

  def history_mask(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    history = features[HISTORY_PREFIX + self.spec.item_id]
    return tf.sequence_mask(features[HISTORY_LENGTH],
                            maxlen=tf.shape(history)[1])

  def call(self, features: Dict[str, tf.Tensor],
           candidates: Optional[Dict[str, tf.Tensor]] = None
           ) -> EmbeddedFeatures:
    """Embeds a batch; `candidates` maps item features to [B, N] ids.

    Without `candidates`, the batch's own candidate ([B] ids) is used, N = 1.
    """
    if candidates is None:
      candidates = {f.name: features[f.name][:, tf.newaxis]
                    for f in self.spec.item_features}
    numeric = [tf.cast(features[n], tf.float32)[:, tf.newaxis]
               for n in self.spec.numeric_features]
    user = self.embed_user(features)
    return EmbeddedFeatures(
        user=user,
        candidate=self.embed_items(candidates),
        history=self.embed_items(features, HISTORY_PREFIX),
        mask=self.history_mask(features),
        numeric=(tf.concat(numeric, -1) if numeric
                 else tf.zeros([tf.shape(user)[0], 0])))

  def penalty(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """The regularisation term of this batch (0 when disabled)."""
    if self.regularization is None:
      return tf.constant(0.0)
    terms = []
    for feature in self.spec.user_features + self.spec.item_features:
      table = self.tables[feature.name].embeddings
      if self.regularization == "l2":
        terms.append(0.5 * self.l2 * tf.reduce_sum(tf.square(table)))
        continue
      ids = [tf.reshape(features[name], [-1])
             for name in (feature.name, HISTORY_PREFIX + feature.name,
                          NEGATIVE_PREFIX + feature.name) if name in features]
      terms.append(self.regularizers[feature.name](table, tf.concat(ids, 0)))
    return tf.add_n(terms)

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(spec=self.spec.to_dict(), regularization=self.regularization,
                  l2=self.l2)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["spec"] = FeatureSpec.from_dict(config["spec"])
    return cls(**config)
