"""The Embedding & MLP base model (DIN paper, section 4.2)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfrs_din.layers.arrays import accepts_arrays
from tfrs_din.models.ctr_model import (CTRModel, behaviour_sum_features,
                                       pool_behaviours)
from tfrs_din.models.embedding import EmbeddedFeatures

POOLINGS = ("sum", "mean")


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays  # NumPy arrays and Python lists in the features dict
class BaseModel(CTRModel):
  """Embedding & MLP: behaviours are sum- or mean-pooled, ignoring the candidate.

      interest = sum_j mask_j e_j          (or divided by sum_j mask_j)

  Args:
    pooling: "sum" or "mean".
    **kwargs: see `CTRModel`.

  Example:

  >>> from tfrs_din.data.synthetic import SyntheticConfig, generate
  >>> data = generate(SyntheticConfig(num_users=50))
  >>> model = BaseModel(data.spec)
  >>> model(data.features(slice(0, 4))).shape
  TensorShape([4])
  """

  def __init__(self, spec, pooling: str = "sum", **kwargs):
    super().__init__(spec, **kwargs)
    if pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    self.pooling = pooling

  def interest(self, embedded: EmbeddedFeatures,
               training: Optional[bool] = None):
    # Over the valid behaviours only; an empty history pools to zeros.
    pooled = pool_behaviours(embedded.behaviours,
                             embedded.behaviours.row_lengths(), self.pooling)
    num = tf.shape(embedded.candidate)[1]
    return tf.repeat(tf.expand_dims(pooled, 1), num, axis=1), {}

  def extra_tower_inputs(self, embedded: EmbeddedFeatures):
    # The interest is already the (sum- or mean-) pooled behaviours.
    if not self.behaviour_sum_in_tower:
      return []
    return behaviour_sum_features(embedded, self.tower_behaviour_pooling)[1:]

  def get_config(self) -> dict:
    return dict(super().get_config(), pooling=self.pooling)
