"""Deep Interest Network (Zhou et al., KDD 2018)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import tensorflow as tf

from tfrs_din.layers.activation_unit import LocalActivationUnit
from tfrs_din.layers.arrays import accepts_arrays
from tfrs_din.models.ctr_model import CTRModel
from tfrs_din.models.embedding import EmbeddedFeatures


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays  # NumPy arrays and Python lists in the features dict
class DINModel(CTRModel):
  """DIN: behaviours pooled by the local activation unit of each candidate.

      interest(A) = sum_j a(e_j, v_A) e_j        (see `LocalActivationUnit`)

  Args:
    attention_units: hidden sizes of the activation unit (80, 40).
    attention_activation: "dice", "prelu", "sigmoid", ...
    attention_normalization: None (the paper: weights are not normalised,
      so the pooled vector keeps the intensity of the user's interest) or
      "softmax" over the valid behaviours.
    behaviour_sum_in_tower: see `CTRModel`; on by default, as in the
      official code.
    **kwargs: see `CTRModel` (activation, dropout, regularization, ...).

  Example:

  >>> from tfrs_din.data.synthetic import SyntheticConfig, generate
  >>> data = generate(SyntheticConfig(num_users=50))
  >>> model = DINModel(data.spec)
  >>> model.attention_weights(data.features(slice(0, 4))).shape
  TensorShape([4, 30])
  """

  def __init__(self, spec, attention_units: Sequence[int] = (80, 40),
               attention_activation: str = "dice",
               attention_normalization: Optional[str] = None,
               behaviour_sum_in_tower: bool = True, **kwargs):
    super().__init__(spec, behaviour_sum_in_tower=behaviour_sum_in_tower,
                     **kwargs)
    self.attention_units = tuple(attention_units)
    self.attention_activation = attention_activation
    self.attention_normalization = attention_normalization
    self.attention = LocalActivationUnit(
        self.attention_units, activation=attention_activation,
        normalization=attention_normalization,
        # Serialised: the unit makes its own instance (see MLP).
        kernel_initializer=tf.keras.initializers.serialize(
            self.kernel_initializer),
        name="local_activation_unit")

  def interest(self, embedded: EmbeddedFeatures,
               training: Optional[bool] = None):
    pooled, weights = self.attention(embedded.candidate, embedded.behaviours,
                                     return_weights=True, training=training)
    # Ragged keys give weights as wide as the longest history in the batch.
    missing = tf.shape(embedded.mask)[1] - tf.shape(weights)[-1]
    weights = tf.pad(weights, [[0, 0], [0, 0], [0, missing]])
    return pooled, {"attention": weights}

  def attention_weights(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Weight of each behaviour for the example's candidate, [B, L]."""
    _, intermediates = self.forward(features, training=False)
    return intermediates["attention"][:, 0]

  def get_config(self) -> dict:
    return dict(super().get_config(),
                attention_units=self.attention_units,
                attention_activation=self.attention_activation,
                attention_normalization=self.attention_normalization)
