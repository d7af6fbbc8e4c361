import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from tfrs_din.layers import MLP, PReLU, Dice
from tfrs_din.layers.mlp import (batch_norm_affine, dense_product,
                                 make_activation)


def test_prelu_tower_matches_numpy():
  tower = MLP((4, 3), activation="prelu", output_units=1)
  x = np.random.randn(5, 6).astype(np.float32)
  y = tower(tf.constant(x)).numpy()
  h = x
  for dense, act in zip(tower._dense, tower._activations):
    kernel, bias = (w.numpy() for w in dense.weights)
    h = ref.prelu(h @ kernel + bias, act.get_weights()[0])
  kernel, bias = (w.numpy() for w in tower._output.weights)
  np.testing.assert_allclose(y, h @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_activation_factory():
  assert isinstance(make_activation("dice"), Dice)
  assert isinstance(make_activation("PReLU"), PReLU)
  np.testing.assert_allclose(make_activation("relu")(tf.constant([-1.0, 2.0])),
                             [0.0, 2.0])


def test_dropout_only_in_training_and_config_round_trip():
  tower = MLP((8,), activation="relu", dropout=0.5, seed=1, batch_norm=True)
  x = tf.random.normal([64, 4])
  np.testing.assert_allclose(tower(x, training=False), tower(x, training=False))
  assert (tower(x, training=True).numpy() == 0).mean() > 0.3
  clone = MLP.from_config(tower.get_config())
  assert clone.hidden_units == (8,) and clone.dropout == 0.5 and clone.batch_norm


def test_prelu_slope_is_per_channel_for_any_rank():
  layer = PReLU()
  x = np.random.randn(2, 5, 7, 3).astype(np.float32)
  y = layer(tf.constant(x)).numpy()
  assert layer.alpha.shape == (3,)
  np.testing.assert_allclose(y, ref.prelu(x, 0.25), rtol=1e-6)
  np.testing.assert_allclose(layer(tf.constant(x[:, :2, :1])),
                             ref.prelu(x[:, :2, :1], 0.25), rtol=1e-6)


def _trained_looking(layer, seed=0):
  rng = np.random.default_rng(seed)
  for v in layer.variables:
    if "moving_variance" in v.name:
      v.assign(rng.uniform(0.2, 3.0, v.shape).astype(np.float32))
    elif any(k in v.name for k in ("moving_mean", "alpha", "bias", "gamma",
                                   "beta")):
      v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))


@pytest.mark.parametrize("activation", ["dice", "prelu"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_inference_layers_fold_the_normalisations(activation, batch_norm):
  """Folded kernels, biases and activations give the tower at inference:
  dense -> batch norm (moving statistics) -> activation, dropout off, and an
  input affine map folded into the first layer."""
  tower = MLP((5, 3), activation=activation, batch_norm=batch_norm,
              dropout=0.3, output_units=2)
  x = np.random.default_rng(1).normal(size=(4, 7, 6)).astype(np.float32)
  tower(tf.constant(x))
  _trained_looking(tower)
  scale = np.random.default_rng(2).uniform(0.5, 2.0, 6).astype(np.float32)
  shift = np.random.default_rng(3).normal(size=6).astype(np.float32)

  h = x * scale + shift
  for i, (dense, act) in enumerate(zip(tower._dense, tower._activations)):
    h = h @ dense.kernel.numpy() + dense.bias.numpy()
    if batch_norm:
      norm = tower._norms[i]
      h = ((h - norm.moving_mean.numpy())
           / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
           * norm.gamma.numpy() + norm.beta.numpy())
    if activation == "dice":
      h = ref.dice(h, act.alpha.numpy(), act.moving_mean.numpy(),
                   act.moving_variance.numpy())
    else:
      h = ref.prelu(h, act.alpha.numpy())
  expected = h @ tower._output.kernel.numpy() + tower._output.bias.numpy()

  layers = tower.inference_layers(tf.constant(scale), tf.constant(shift))
  assert [l.kernel.shape for l in layers] == [(6, 5), (5, 3), (3, 2)]
  assert layers[-1].activation is None
  got = tf.constant(x)
  for layer in layers:
    got = layer(got)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  # Without the input map: the Keras tower at inference.
  got = tf.constant(x)
  for layer in tower.inference_layers():
    got = layer(got)
  np.testing.assert_allclose(got, tower(tf.constant(x), training=False),
                             rtol=1e-5, atol=1e-5)


def test_batch_norm_affine_is_the_layer_at_inference():
  norm = tf.keras.layers.BatchNormalization(epsilon=1e-3)
  x = tf.random.normal([3, 4, 5])
  norm(x)
  _trained_looking(norm, seed=4)
  scale, shift = batch_norm_affine(norm)
  np.testing.assert_allclose(x * scale + shift, norm(x, training=False),
                             rtol=1e-5, atol=1e-5)
  other = tf.keras.layers.BatchNormalization(axis=1)
  other(x)
  with pytest.raises(ValueError, match="only a normalisation of the last axis"):
    batch_norm_affine(other)


def test_dense_product_is_matmul_over_the_last_axis():
  x = tf.random.normal([2, 3, 4, 5])
  kernel = tf.random.normal([5, 6])
  got = dense_product(x, kernel)
  assert got.shape == (2, 3, 4, 6)
  np.testing.assert_allclose(got, np.einsum("abcd,de->abce", x, kernel),
                             rtol=1e-5, atol=1e-5)
