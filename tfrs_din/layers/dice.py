"""Dice: the data-adaptive activation of DIN (Zhou et al., 2018, eq. 9)."""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf


class Dice(tf.keras.layers.Layer):
  """Data-adaptive activation whose rectifier point follows the data.

      p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + epsilon))
      f(s) = p(s) * s + (1 - p(s)) * alpha * s

  `alpha` is learned per channel (last axis). In training, E[s] and Var[s]
  are the statistics of the mini-batch over every axis but the last (only over
  valid positions when a mask is given), and moving averages of them are kept;
  at inference the moving averages are used, so an example's output does not
  depend on the rest of its batch. With E = 0 and Var = 0 Dice is PReLU.

  Args:
    epsilon: added to the variance; 1e-8 as in the paper.
    momentum: decay of the moving statistics, as in BatchNormalization.
    alpha_initializer: initializer of the per-channel slope.

  Example:

  >>> dice = Dice()
  >>> y = dice(tf.random.normal([4, 3]), training=True)
  >>> y.shape
  TensorShape([4, 3])
  """

  def __init__(self, epsilon: float = 1e-8, momentum: float = 0.99,
               alpha_initializer: Any = "zeros", **kwargs):
    super().__init__(**kwargs)
    self.epsilon = epsilon
    self.momentum = momentum
    self.alpha_initializer = tf.keras.initializers.get(alpha_initializer)
    self.supports_masking = True

  def build(self, input_shape):
    channels = int(input_shape[-1])
    self.alpha = self.add_weight(
        name="alpha", shape=(channels,), initializer=self.alpha_initializer)
    # ON_READ/MEAN like BatchNormalization, so replicas may update them locally.
    stat = dict(shape=(channels,), trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.MEAN)
    self.moving_mean = self.add_weight(
        name="moving_mean", initializer="zeros", **stat)
    self.moving_variance = self.add_weight(
        name="moving_variance", initializer="ones", **stat)
    super().build(input_shape)

  def call(self, inputs: tf.Tensor, training: Optional[bool] = None,
           mask: Optional[tf.Tensor] = None) -> tf.Tensor:
    if training is None:
      training = tf.keras.backend.learning_phase()
    if isinstance(training, bool) or isinstance(training, int):
      mean, variance = (self._batch_statistics(inputs, mask) if training
                        else (self.moving_mean, self.moving_variance))
    else:
      mean, variance = tf.cond(
          tf.cast(training, tf.bool),
          lambda: self._batch_statistics(inputs, mask),
          lambda: (tf.identity(self.moving_mean),
                   tf.identity(self.moving_variance)))
    mean = tf.cast(mean, inputs.dtype)
    variance = tf.cast(variance, inputs.dtype)
    p = tf.sigmoid((inputs - mean) * tf.math.rsqrt(variance + self.epsilon))
    return p * inputs + (1.0 - p) * self.alpha * inputs

  def _batch_statistics(self, inputs, mask):
    """Mean/variance over all axes but the last; updates the moving averages."""
    x = tf.reshape(tf.cast(inputs, tf.float32), [-1, tf.shape(inputs)[-1]])
    if mask is None:
      mean, variance = tf.nn.moments(x, axes=[0])
    else:
      w = tf.reshape(tf.cast(mask, tf.float32), [-1, 1])
      count = tf.maximum(tf.reduce_sum(w), 1.0)
      mean = tf.reduce_sum(x * w, axis=0) / count
      variance = tf.reduce_sum(tf.square(x - mean) * w, axis=0) / count
    decay = 1.0 - self.momentum
    self.moving_mean.assign_sub((self.moving_mean - mean) * decay)
    self.moving_variance.assign_sub((self.moving_variance - variance) * decay)
    return mean, variance

  def compute_mask(self, inputs, mask=None):
    return mask

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(
        epsilon=self.epsilon, momentum=self.momentum,
        alpha_initializer=tf.keras.initializers.serialize(
            self.alpha_initializer))
    return config
