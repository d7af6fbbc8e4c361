"""Fully connected towers with the activations compared in the DIN paper."""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from tfrs_din.layers.arrays import accepts_arrays
from tfrs_din.layers.dice import Dice

ActivationSpec = Union[str, None]


def dense_product(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
  """x [..., D] @ kernel [D, H] -> [..., H], as one 2-D matrix product.

  A rank-3 `tf.matmul` against a rank-2 kernel is a broadcasting batch matmul
  whose kernel gradient materialises one [D, H] matrix per batch row before
  summing them; flattening the leading axes avoids that.
  """
  if x.shape.rank == 2:
    return tf.matmul(x, kernel)
  flat = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), kernel)
  units = kernel.shape[-1]
  units = tf.shape(kernel)[-1] if units is None else units
  return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], [units]], 0))


def batch_norm_affine(norm: tf.keras.layers.BatchNormalization
                      ) -> Tuple[tf.Tensor, tf.Tensor]:
  """A BatchNormalization at inference as y = x * scale + shift.

  scale = gamma / sqrt(moving_variance + epsilon) and
  shift = beta - moving_mean * scale, per channel of the last axis.

  Args:
    norm: a built Keras BatchNormalization over the last axis.

  Raises:
    ValueError: it normalises another axis.
  """
  axis = norm.axis if isinstance(norm.axis, int) else list(norm.axis)
  rank = norm.input_spec.ndim if norm.input_spec is not None else None
  if axis not in (-1, [-1]) and not (rank is not None
                                     and axis in (rank - 1, [rank - 1])):
    raise ValueError(f"{norm.name}: only a normalisation of the last axis "
                     f"folds into a dense layer, got axis {axis}")
  scale = tf.math.rsqrt(norm.moving_variance + norm.epsilon)
  if norm.gamma is not None:
    scale = scale * norm.gamma
  shift = -norm.moving_mean * scale
  if norm.beta is not None:
    shift = shift + norm.beta
  return scale, shift


def activate_for_inference(activation: Optional[tf.keras.layers.Layer],
                           z: tf.Tensor) -> tf.Tensor:
  """An activation layer (of `make_activation`; None: linear) applied to z in
  inference mode: Dice with its moving statistics."""
  if activation is None:
    return z
  if isinstance(activation, Dice):
    return activation(z, training=False)
  return activation(z)


@dataclasses.dataclass(frozen=True)
class InferenceDense:
  """One dense layer at inference: y = activation(x @ kernel + bias), with
  any affine normalisation already folded into the kernel and bias.

  Attributes:
    kernel: [D, H].
    bias: [H].
    activation: the activation layer, applied in inference mode (Dice with
      its moving statistics); None for a linear layer.
  """
  kernel: tf.Tensor
  bias: tf.Tensor
  activation: Optional[tf.keras.layers.Layer] = None

  def activate(self, z: tf.Tensor) -> tf.Tensor:
    """The activation of pre-activations z [..., H], in inference mode."""
    return activate_for_inference(self.activation, z)

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    """activation(x @ kernel + bias) for x [..., D]."""
    return self.activate(dense_product(x, self.kernel) + self.bias)


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

  def inference_layers(self, input_scale: Optional[tf.Tensor] = None,
                       input_shift: Optional[tf.Tensor] = None
                       ) -> List[InferenceDense]:
    """The tower at inference as plain dense layers, normalisation folded in.

    Applying the returned layers in order gives `self(x, training=False)`
    (up to float rounding): each batch normalisation (its moving statistics,
    `batch_norm_affine`) is folded into the dense layer before it,
    W' = W diag(s), b' = b s + t; dropout is the identity. With `input_scale`
    and `input_shift` the input is first mapped x -> x * input_scale +
    input_shift (e.g. a normalisation of the tower's input), folded into the
    first layer: W' = diag(input_scale) W, b' = b + input_shift W.

    Args:
      input_scale: [D] or None.
      input_shift: [D] or None.

    Returns:
      The hidden layers (with their activations), then the output layer
      (linear) if there is one.

    Example:

    >>> tower = MLP((4,), activation="prelu", output_units=1)
    >>> x = tf.ones([2, 3])
    >>> y = tower(x)
    >>> for layer in tower.inference_layers():
    ...   x = layer(x)
    >>> bool(tf.reduce_all(tf.abs(x - y) < 1e-6))
    True
    """
    if not self.built:
      raise ValueError(f"{self.name}: call the MLP once (build it) before "
                       "folding it for inference")
    layers = []
    for dense, norm, act in zip(self._dense, self._norms, self._activations):
      kernel, bias = tf.convert_to_tensor(dense.kernel), dense.bias
      if norm is not None:
        scale, shift = batch_norm_affine(norm)
        kernel, bias = kernel * scale, bias * scale + shift
      layers.append(InferenceDense(kernel, tf.convert_to_tensor(bias), act))
    if self._output is not None:
      layers.append(InferenceDense(tf.convert_to_tensor(self._output.kernel),
                                   tf.convert_to_tensor(self._output.bias)))
    if not layers:
      return layers
    first = layers[0]
    kernel, bias = first.kernel, first.bias
    if input_shift is not None:
      bias = bias + tf.linalg.matvec(kernel, input_shift, transpose_a=True)
    if input_scale is not None:
      kernel = kernel * input_scale[:, tf.newaxis]
    layers[0] = InferenceDense(kernel, bias, first.activation)
    return layers

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
