import numpy as np
import tensorflow as tf

import reference as ref
from tfrs_din.layers import MLP, PReLU, Dice
from tfrs_din.layers.mlp import make_activation


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
