"""Fully connected towers with the activations compared in the DIN paper."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import tensorflow as tf

from tfrs_din.layers.arrays import accepts_arrays
from tfrs_din.layers.dice import Dice

ActivationSpec = Union[str, None]


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays
class PReLU(tf.keras.layers.Layer):
  """Per-channel PReLU: f(x) = max(0, x) + alpha * min(0, x), alpha of shape [C].

  Keras' own PReLU learns one alpha per non-batch position by default, which
  ties the weights to the sequence length and number of candidates; here the
  slope is shared over every axis but the last, for inputs of any rank.

  References: He et al., arXiv:1502.01852, eq. 1; used by DIN,
  arXiv:1706.06978, eq. 8.

  Input: [..., C], any rank. Output: the same shape.

  Args:
    alpha_initializer: initial slope, a number (0.25, as in He et al. 2015)
      or any Keras initializer.

  Example:

  >>> PReLU()(tf.constant([[2.0, -2.0]])).numpy()
  array([[ 2. , -0.5]], dtype=float32)
  """

  def __init__(self, alpha_initializer: Any = 0.25, **kwargs):
    super().__init__(**kwargs)
    if isinstance(alpha_initializer, (int, float)):
      alpha_initializer = tf.keras.initializers.Constant(alpha_initializer)
    self.alpha_initializer = tf.keras.initializers.get(alpha_initializer)

  def build(self, input_shape):
    self.alpha = self.add_weight(
        name="alpha", shape=(int(input_shape[-1]),),
        initializer=self.alpha_initializer)
    super().build(input_shape)

  def call(self, inputs: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(inputs) - self.alpha * tf.nn.relu(-inputs)

  def get_config(self) -> dict:
    return dict(super().get_config(), alpha_initializer=(
        tf.keras.initializers.serialize(self.alpha_initializer)))


def make_activation(name: ActivationSpec, layer_name: Optional[str] = None
                    ) -> tf.keras.layers.Layer:
  """Returns an activation layer: "dice", "prelu", or any Keras activation.

  Args:
    name: "dice", "prelu" (per-channel slope, initialised at 0.25 as in
      `torch.nn.PReLU`), or a name understood by `tf.keras.activations.get`
      ("relu", "sigmoid", ...). None means linear.
    layer_name: optional name for the returned layer.
  """
  if name is None or name == "linear":
    return tf.keras.layers.Activation("linear", name=layer_name)
  lowered = name.lower()
  if lowered == "dice":
    return Dice(name=layer_name)
  if lowered == "prelu":
    return PReLU(name=layer_name)
  return tf.keras.layers.Activation(name, name=layer_name)


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays
class MLP(tf.keras.layers.Layer):
  """A tower of dense layers: x <- drop(act(bn(W x + b))) for each hidden size.

  The activation is applied per layer and may be Dice or PReLU (DIN's
  comparison) or any Keras activation. Masks are passed to Dice so that
  padded positions do not enter its batch statistics.

  References: DIN, arXiv:1706.06978, section 4.2 and Fig. 2 (the MLP of the
  Embedding&MLP model; activations eq. 8 PReLU, eq. 9 Dice).

  Input: [..., D], any rank; `mask` (optional) [...].
  Output: [..., output_units], or [..., hidden_units[-1]] without output layer.

  Args:
    hidden_units: sizes of the hidden layers, e.g. (200, 80).
    activation: see `make_activation`.
    batch_norm: batch-normalise each pre-activation.
    dropout: dropout rate after each activation (0 disables).
    output_units: if set, a final linear layer of this size.
    kernel_regularizer: applied to every dense kernel.
    seed: seed of the dropout layers.
    kernel_initializer: initializer of every dense kernel.
    bias_initializer: initializer of every dense bias.

  Example:

  >>> tower = MLP((8, 4), activation="prelu", output_units=1)
  >>> tower(tf.ones([2, 5])).shape
  TensorShape([2, 1])
  """

  def __init__(self, hidden_units: Sequence[int] = (200, 80),
               activation: ActivationSpec = "dice", batch_norm: bool = False,
               dropout: float = 0.0, output_units: Optional[int] = None,
               kernel_regularizer=None, seed: Optional[int] = None,
               kernel_initializer: Any = "glorot_uniform",
               bias_initializer: Any = "zeros", **kwargs):
    super().__init__(**kwargs)
    self.hidden_units = tuple(int(u) for u in hidden_units)
    self.activation = activation
    self.batch_norm = batch_norm
    self.dropout = dropout
    self.output_units = output_units
    self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
    self.seed = seed
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
    self.bias_initializer = tf.keras.initializers.get(bias_initializer)
    self.supports_masking = True
    # Configs, not instances: each Dense gets its own initializer (Keras
    # warns that a reused unseeded instance repeats its values).
    initializers = dict(
        kernel_initializer=tf.keras.initializers.serialize(
            self.kernel_initializer),
        bias_initializer=tf.keras.initializers.serialize(self.bias_initializer))
    self._dense = [
        tf.keras.layers.Dense(u, kernel_regularizer=self.kernel_regularizer,
                              name=f"dense_{i}", **initializers)
        for i, u in enumerate(self.hidden_units)]
    self._norms = [tf.keras.layers.BatchNormalization(name=f"bn_{i}")
                   if batch_norm else None
                   for i in range(len(self.hidden_units))]
    self._activations = [make_activation(activation, f"act_{i}")
                         for i in range(len(self.hidden_units))]
    self._dropouts = [
        tf.keras.layers.Dropout(dropout, seed=None if seed is None else seed + i)
        if dropout > 0 else None for i in range(len(self.hidden_units))]
    self._output = (tf.keras.layers.Dense(output_units, name="output",
                                          kernel_regularizer=self.kernel_regularizer,
                                          **initializers)
                    if output_units else None)

  def call(self, inputs: tf.Tensor, training: Optional[bool] = None,
           mask: Optional[tf.Tensor] = None) -> tf.Tensor:
    x = inputs
    for dense, norm, act, drop in zip(self._dense, self._norms,
                                      self._activations, self._dropouts):
      x = dense(x)
      if norm is not None:
        x = norm(x, training=training)
      x = act(x, training=training, mask=mask) if isinstance(act, Dice) else act(x)
      if drop is not None:
        x = drop(x, training=training)
    if self._output is not None:
      x = self._output(x)
    return x

  def compute_mask(self, inputs, mask=None):
    return mask

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(
        hidden_units=self.hidden_units, activation=self.activation,
        batch_norm=self.batch_norm, dropout=self.dropout,
        output_units=self.output_units,
        kernel_regularizer=tf.keras.regularizers.serialize(
            self.kernel_regularizer) if self.kernel_regularizer else None,
        seed=self.seed,
        kernel_initializer=tf.keras.initializers.serialize(
            self.kernel_initializer),
        bias_initializer=tf.keras.initializers.serialize(
            self.bias_initializer))
    return config
