"""Embedding of the feature groups, shared by candidate and behaviours."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from tfrs_din.layers.arrays import accepts_arrays

from tfrs_din.features import (HISTORY_LENGTH, HISTORY_PREFIX, NEGATIVE_PREFIX,
                               FeatureSpec)
from tfrs_din.regularizers import MiniBatchAwareL2

# Regularisers of the tables ("auto" is resolved by the model first);
# "lazy_l2" adds no loss term: LazyAdam applies it (see `CTRModel.compile`).
TABLE_REGULARIZATIONS = (None, "mba", "l2", "lazy_l2")
DEFAULT_EMBEDDINGS_INITIALIZER = {"class_name": "RandomNormal",
                                  "config": {"stddev": 0.05}}


@dataclasses.dataclass
class EmbeddedFeatures:
  """Embedded inputs of a batch.

  Attributes:
    user: [B, Du] concatenated user-feature embeddings (Du may be 0).
    candidate: [B, N, Di] concatenated item-feature embeddings of N candidates.
    history: [B, L, Di] behaviour embeddings, zeros at padding.
    mask: [B, L] boolean, True at valid behaviours (a prefix of each row).
    behaviours: the valid behaviours only, a `tf.RaggedTensor` [B, (L), Di]
      (the same values as `history`, without the padding).
    numeric: [B, n] numeric features (n may be 0).
  """
  user: tf.Tensor
  candidate: tf.Tensor
  history: tf.Tensor
  mask: tf.Tensor
  numeric: tf.Tensor
  behaviours: tf.RaggedTensor


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays
class FeatureEmbedder(tf.keras.layers.Layer):
  """Looks up every feature group; one table per categorical feature.

  The item representation is the concatenation of its features' embeddings,
  [item_emb ; cat_emb ; ...], for the candidate and for every behaviour alike.

  Args:
    spec: the `FeatureSpec`.
    regularization: None, "mba" (mini-batch aware, rows in the batch scaled by
      1/n_j), "l2" (every row of every table, each step: O(vocabulary)) or
      "lazy_l2" (the shrinkage "l2" gets from Adam, applied by the optimizer,
      `tfrs_din.optimizers.LazyAdam(row_l2=...)`: no term here).
    l2: lambda of the regularisation.
    embeddings_initializer: initializer of every table (None: the default
      below).
  """

  def __init__(self, spec: FeatureSpec, regularization: Optional[str] = None,
               l2: float = 0.01, embeddings_initializer: Any = None, **kwargs):
    super().__init__(**kwargs)
    if regularization not in TABLE_REGULARIZATIONS:
      raise ValueError(f"regularization must be one of {TABLE_REGULARIZATIONS}, "
                       f"got {regularization!r}.")
    self.spec = spec
    self.regularization = regularization
    self.l2 = l2
    self.embeddings_initializer = tf.keras.initializers.get(
        embeddings_initializer or DEFAULT_EMBEDDINGS_INITIALIZER)
    self.tables = {}
    self.regularizers = {}
    for feature in spec.user_features + spec.item_features:
      self.tables[feature.name] = tf.keras.layers.Embedding(
          feature.vocab_size, feature.embedding_dim,
          embeddings_initializer=tf.keras.initializers.serialize(
              self.embeddings_initializer),  # one instance per table
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

  def embed_sequence(self, features: Dict[str, tf.Tensor], mask: tf.Tensor,
                     prefix: str = HISTORY_PREFIX
                     ) -> Tuple[tf.Tensor, tf.RaggedTensor]:
    """Embeddings of a behaviour sequence: [B, L, Di] and its valid part.

    Only the valid positions are looked up, so padded ids never reach a table
    and the tables' sparse gradients hold only real behaviours: with short
    histories most of a padded batch is padding, and the optimiser's cost
    follows the rows in the gradient. Returns the padded tensor (exact zeros
    at padding) and the ragged [B, (L), Di] tensor of the valid positions.
    """
    positions = tf.where(mask)                                      # [P, 2]
    valid = tf.concat([self.tables[f.name](
        tf.gather_nd(features[prefix + f.name], positions))
                       for f in self.spec.item_features], axis=-1)  # [P, Di]
    shape = tf.concat([tf.shape(mask, out_type=tf.int64),
                       tf.shape(valid, out_type=tf.int64)[1:]], 0)
    ragged = tf.RaggedTensor.from_value_rowids(
        valid, positions[:, 0], nrows=shape[0], validate=False)
    return tf.scatter_nd(positions, valid, shape), ragged

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
    mask = self.history_mask(features)
    history, behaviours = self.embed_sequence(features, mask)
    return EmbeddedFeatures(
        user=user,
        candidate=self.embed_items(candidates),
        history=history,
        mask=mask,
        behaviours=behaviours,
        numeric=(tf.concat(numeric, -1) if numeric
                 else tf.zeros([tf.shape(user)[0], 0])))

  def penalty(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """The regularisation term of this batch (0 when disabled)."""
    if self.regularization in (None, "lazy_l2"):
      return tf.constant(0.0)
    terms = []
    mask = self.history_mask(features)
    for feature in self.spec.user_features + self.spec.item_features:
      table = self.tables[feature.name].embeddings
      if self.regularization == "l2":
        terms.append(0.5 * self.l2 * tf.reduce_sum(tf.square(table)))
        continue
      # Ids at padded positions of sequences are not in the batch.
      ids = [tf.reshape(features[feature.name], [-1])]
      ids += [tf.boolean_mask(features[prefix + feature.name], mask)
              for prefix in (HISTORY_PREFIX, NEGATIVE_PREFIX)
              if prefix + feature.name in features]
      terms.append(self.regularizers[feature.name](table, tf.concat(ids, 0)))
    return tf.add_n(terms)

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(spec=self.spec.to_dict(), regularization=self.regularization,
                  l2=self.l2, embeddings_initializer=(
                      tf.keras.initializers.serialize(
                          self.embeddings_initializer)))
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["spec"] = FeatureSpec.from_dict(config["spec"])
    return cls(**config)
