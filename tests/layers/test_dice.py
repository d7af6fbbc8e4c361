import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from tfrs_din.layers import Dice


def _built(channels=3, **kwargs):
  layer = Dice(**kwargs)
  layer.build(tf.TensorShape([None, channels]))
  layer.alpha.assign([0.1, -0.3, 0.7][:channels])
  return layer


def test_training_uses_batch_statistics_and_matches_the_equation():
  x = np.random.randn(16, 3).astype(np.float32) * 2 + 1
  layer = _built()
  y = layer(tf.constant(x), training=True).numpy()
  expected = ref.dice(x, layer.alpha.numpy(), x.mean(0), x.var(0))
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_moving_statistics_follow_momentum():
  x = np.random.randn(32, 3).astype(np.float32) + 3
  layer = _built(momentum=0.9)
  layer(tf.constant(x), training=True)
  np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * x.mean(0),
                             rtol=1e-5)
  np.testing.assert_allclose(layer.moving_variance.numpy(),
                             0.9 + 0.1 * x.var(0), rtol=1e-5)


def test_inference_uses_moving_statistics_and_is_batch_independent():
  layer = _built()
  layer.moving_mean.assign([0.5, -1.0, 2.0])
  layer.moving_variance.assign([2.0, 0.5, 1.5])
  x = np.random.randn(8, 3).astype(np.float32)
  batch = layer(tf.constant(x), training=False).numpy()
  alone = np.concatenate(
      [layer(tf.constant(x[i:i + 1]), training=False).numpy() for i in range(8)])
  np.testing.assert_allclose(batch, alone, rtol=1e-6)
  expected = ref.dice(x, layer.alpha.numpy(), layer.moving_mean.numpy(),
                      layer.moving_variance.numpy())
  np.testing.assert_allclose(batch, expected, rtol=1e-5, atol=1e-6)
  # Training output of the same row does depend on the batch.
  other = np.concatenate([x[:1], x[1:] + 5.0])
  assert not np.allclose(layer(tf.constant(x), training=True)[0],
                         layer(tf.constant(other), training=True)[0])


def test_reduces_to_prelu_with_zero_mean_and_variance():
  layer = _built(epsilon=1e-12)
  layer.moving_mean.assign(tf.zeros(3))
  layer.moving_variance.assign(tf.zeros(3))
  x = np.random.randn(10, 3).astype(np.float32)
  np.testing.assert_allclose(layer(tf.constant(x), training=False),
                             ref.prelu(x, layer.alpha.numpy()), atol=1e-6)


def test_mask_keeps_padded_values_out_of_the_statistics():
  x = np.random.randn(4, 5, 3).astype(np.float32)
  mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0],
                   [1, 1, 1, 1, 1]], bool)
  layer = _built()
  y1 = layer(tf.constant(x), training=True, mask=tf.constant(mask)).numpy()
  x2 = np.where(mask[..., None], x, 100.0).astype(np.float32)
  y2 = layer(tf.constant(x2), training=True, mask=tf.constant(mask)).numpy()
  np.testing.assert_allclose(y1[mask], y2[mask], rtol=1e-5, atol=1e-6)
  valid = x[mask]
  np.testing.assert_allclose(
      y1[mask], ref.dice(valid, layer.alpha.numpy(), valid.mean(0),
                         valid.var(0)), rtol=1e-4, atol=1e-5)


def test_config_round_trip():
  layer = Dice(epsilon=1e-6, momentum=0.9)
  clone = Dice.from_config(layer.get_config())
  assert (clone.epsilon, clone.momentum) == (1e-6, 0.9)


def _autodiff_dice(x, alpha, weights, eps=1e-8):
  """Dice written plainly in TF, differentiated by autodiff (the reference)."""
  total = tf.reduce_sum(weights)
  mean = tf.reduce_sum(x * weights, 0) / total
  variance = tf.reduce_sum(tf.square(x - mean) * weights, 0) / total
  p = tf.sigmoid((x - mean) / tf.sqrt(variance + eps))
  return p * x + (1 - p) * alpha * x


@pytest.mark.parametrize("masked", [False, True])
def test_hand_written_gradient_matches_autodiff(masked):
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(1.0, 2.0, (6, 5, 3)).astype(np.float32))
  mask = rng.uniform(size=(6, 5)) < 0.6 if masked else np.ones((6, 5), bool)
  upstream = tf.constant(rng.normal(size=(6, 5, 3)).astype(np.float32))
  layer = _built()
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y = layer(x, training=True, mask=tf.constant(mask) if masked else None)
    loss = tf.reduce_sum(y * upstream)
    flat = tf.reshape(x, [-1, 3])
    expected_y = _autodiff_dice(flat, layer.alpha,
                                tf.reshape(tf.cast(mask, tf.float32), [-1, 1]))
    expected_loss = tf.reduce_sum(expected_y * tf.reshape(upstream, [-1, 3]))
  np.testing.assert_allclose(tf.reshape(y, [-1, 3]), expected_y, rtol=1e-5,
                             atol=1e-5)
  for got, want in zip(tape.gradient(loss, [x, layer.alpha]),
                       tape.gradient(expected_loss, [x, layer.alpha])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
