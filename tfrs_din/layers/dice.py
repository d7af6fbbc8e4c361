"""Dice: the data-adaptive activation of DIN (Zhou et al., 2018, eq. 9)."""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

from tfrs_din.layers.arrays import accepts_arrays


def _dice_with_batch_statistics(x: tf.Tensor, alpha: tf.Tensor,
                                weights: Optional[tf.Tensor], epsilon: float):
  """Training-mode Dice on x [M, C] with a hand-written, fused gradient.

  With w the row weights (1, or 0 at masked rows), W = sum(w),
  mu = sum(w x) / W, var = sum(w (x - mu)^2) / W, r = 1 / sqrt(var + eps),
  n = (x - mu) r, p = sigmoid(n), y = x (alpha + (1 - alpha) p), and g the
  gradient of y:

      dL/dalpha = sum_rows g x (1 - p)
      gn        = g x (1 - alpha) p (1 - p)
      dL/dx     = g (alpha + (1 - alpha) p)
                  + r (gn - w (sum_rows gn + n sum_rows gn n) / W)

  (the last term is the batch-normalisation backward pass). Autodiff of the
  same forward pass builds several times as many kernels; Dice runs on every
  (candidate, behaviour) pair of the activation unit, so this matters.

  Returns y, mu and var (mu and var only feed the moving averages and get no
  gradient).
  """

  @tf.custom_gradient
  def dice(x, alpha):
    if weights is None:
      total = tf.cast(tf.shape(x)[0], x.dtype)
      mean = tf.reduce_mean(x, 0)
      centered = x - mean
      variance = tf.reduce_mean(tf.square(centered), 0)
    else:
      total = tf.maximum(tf.reduce_sum(weights), 1.0)
      mean = tf.reduce_sum(x * weights, 0) / total
      centered = x - mean
      variance = tf.reduce_sum(tf.square(centered) * weights, 0) / total
    r = tf.math.rsqrt(variance + epsilon)
    n = centered * r
    p = tf.sigmoid(n)
    gate = alpha + (1.0 - alpha) * p
    y = x * gate

    def grad(g, unused_dmean, unused_dvariance):
      gx = g * x
      d_alpha = tf.reduce_sum(gx * (1.0 - p), 0)
      gn = gx * (1.0 - alpha) * p * (1.0 - p)
      stats = (tf.reduce_sum(gn, 0) + n * tf.reduce_sum(gn * n, 0)) / total
      if weights is not None:
        stats = stats * weights
      return g * gate + r * (gn - stats), d_alpha

    return (y, tf.stop_gradient(mean), tf.stop_gradient(variance)), grad

  return dice(x, alpha)


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays
class Dice(tf.keras.layers.Layer):
  """Data-adaptive activation whose rectifier point follows the data.

      p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + epsilon))
      f(s) = p(s) * s + (1 - p(s)) * alpha * s

  `alpha` is learned per channel (last axis). In training, E[s] and Var[s]
  are the statistics of the mini-batch over every axis but the last (only over
  valid positions when a mask is given), and moving averages of them are kept;
  at inference the moving averages are used, so an example's output does not
  depend on the rest of its batch. With E = 0 and Var = 0 Dice is PReLU.

  References: DIN, arXiv:1706.06978, eq. 9.

  Input: [..., C], any rank; `mask` (optional) [...], True at valid positions.
  Output: the same shape as the input.

  Args:
    epsilon: added to the variance; 1e-8 as in the paper.
    momentum: decay of the moving statistics, as in BatchNormalization.
    alpha_initializer: initializer of the per-channel slope.

  Example:

  >>> dice = Dice()
  >>> y = dice(tf.random.normal([4, 3]), training=True)
  >>> y.shape
  TensorShape([4, 3])
  >>> # Inference, fresh statistics (mean 0, variance 1), alpha = 0: x * p(x).
  >>> Dice()(tf.constant([[2.0, -2.0]]), training=False).numpy()
  array([[ 1.7615942 , -0.23840584]], dtype=float32)
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
    if isinstance(training, (bool, int)):
      return (self._train(inputs, mask) if training
              else self._infer(inputs))
    return tf.cond(tf.cast(training, tf.bool),
                   lambda: self._train(inputs, mask),
                   lambda: self._infer(inputs))

  def _infer(self, inputs: tf.Tensor) -> tf.Tensor:
    mean = tf.cast(self.moving_mean, inputs.dtype)
    scale = tf.cast(tf.math.rsqrt(self.moving_variance + self.epsilon),
                    inputs.dtype)
    p = tf.sigmoid((inputs - mean) * scale)
    alpha = tf.cast(self.alpha, inputs.dtype)
    return inputs * (alpha + (1.0 - alpha) * p)

  def _train(self, inputs: tf.Tensor, mask: Optional[tf.Tensor]) -> tf.Tensor:
    """Batch statistics (over valid positions) and moving-average updates."""
    channels = tf.shape(inputs)[-1]
    x = tf.reshape(tf.cast(inputs, tf.float32), [-1, channels])
    weights = (None if mask is None else
               tf.reshape(tf.cast(mask, tf.float32), [-1, 1]))
    y, mean, variance = _dice_with_batch_statistics(
        x, tf.convert_to_tensor(self.alpha), weights, self.epsilon)
    decay = 1.0 - self.momentum
    self.moving_mean.assign_sub((self.moving_mean - mean) * decay)
    self.moving_variance.assign_sub((self.moving_variance - variance) * decay)
    return tf.cast(tf.reshape(y, tf.shape(inputs)), inputs.dtype)

  def compute_mask(self, inputs, mask=None):
    return mask

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(
        epsilon=self.epsilon, momentum=self.momentum,
        alpha_initializer=tf.keras.initializers.serialize(
            self.alpha_initializer))
    return config
