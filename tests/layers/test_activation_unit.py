import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from tfrs_din.layers import LocalActivationUnit

B, L, D = 3, 6, 4
MASK = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]],
                bool)


def _inputs():
  rng = np.random.default_rng(1)
  return (rng.normal(size=(B, D)).astype(np.float32),
          rng.normal(size=(B, L, D)).astype(np.float32))


def _numpy_scores(layer, q, keys):
  """a([q, k, q-k, q*k]) with the full (unsplit) first layer and sigmoid."""
  qb = np.broadcast_to(q[:, None, :], keys.shape)
  x = np.concatenate([qb, keys, qb - keys, qb * keys], axis=-1)
  h = ref.sigmoid(x @ layer.first_kernel.numpy() + layer.first_bias.numpy())
  rest = layer._rest
  for dense in rest._dense:
    kernel, bias = (w.numpy() for w in dense.weights)
    h = ref.sigmoid(h @ kernel + bias)
  kernel, bias = (w.numpy() for w in rest._output.weights)
  return (h @ kernel + bias)[..., 0]


@pytest.mark.parametrize("normalization", [None, "softmax"])
def test_matches_numpy_and_masks_exactly(normalization):
  q, keys = _inputs()
  layer = LocalActivationUnit((5, 3), activation="sigmoid",
                              normalization=normalization)
  pooled, w = layer(tf.constant(q), tf.constant(keys), mask=tf.constant(MASK),
                    return_weights=True)
  scores = _numpy_scores(layer, q, keys)
  if normalization == "softmax":
    e = np.where(MASK, np.exp(scores - scores.max(-1, keepdims=True)), 0.0)
    expected_w = e / e.sum(-1, keepdims=True)
  else:
    expected_w = np.where(MASK, scores, 0.0)
  np.testing.assert_allclose(w, expected_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(w.numpy()[~MASK], 0.0)
  np.testing.assert_allclose(pooled, np.einsum("bl,bld->bd", expected_w, keys),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["dice", "prelu"])
@pytest.mark.parametrize("training", [True, False])
def test_padded_positions_do_not_leak(activation, training):
  q, keys = _inputs()
  layer = LocalActivationUnit((5, 3), activation=activation)
  out1 = layer(tf.constant(q), tf.constant(keys), mask=tf.constant(MASK),
               training=training)
  garbage = np.where(MASK[..., None], keys, 50.0).astype(np.float32)
  out2 = layer(tf.constant(q), tf.constant(garbage), mask=tf.constant(MASK),
               training=training)
  np.testing.assert_allclose(out1, out2, rtol=1e-5, atol=1e-5)


def test_many_candidates_equal_one_at_a_time():
  rng = np.random.default_rng(2)
  queries = rng.normal(size=(B, 5, D)).astype(np.float32)
  _, keys = _inputs()
  layer = LocalActivationUnit((5, 3), activation="prelu")
  pooled, w = layer(tf.constant(queries), tf.constant(keys),
                    mask=tf.constant(MASK), return_weights=True)
  assert pooled.shape == (B, 5, D) and w.shape == (B, 5, L)
  for n in range(5):
    p_n, w_n = layer(tf.constant(queries[:, n]), tf.constant(keys),
                     mask=tf.constant(MASK), return_weights=True)
    np.testing.assert_allclose(pooled[:, n], p_n, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w[:, n], w_n, rtol=1e-5, atol=1e-5)


def test_empty_history_gives_zero_interest_and_config_round_trip():
  q, keys = _inputs()
  layer = LocalActivationUnit((4,), normalization="softmax")
  out = layer(tf.constant(q), tf.constant(keys), mask=tf.zeros([B, L], tf.bool))
  np.testing.assert_array_equal(out, 0.0)
  clone = LocalActivationUnit.from_config(layer.get_config())
  assert clone.hidden_units == (4,) and clone.normalization == "softmax"
  with pytest.raises(ValueError, match="normalization"):
    LocalActivationUnit(normalization="sparsemax")


@pytest.mark.parametrize("normalization", [None, "softmax"])
def test_ragged_keys_give_the_same_result_as_padded_keys_and_mask(
    normalization):
  q, keys = _inputs()
  layer = LocalActivationUnit((5, 3), activation="prelu",
                              normalization=normalization)
  pooled, w = layer(tf.constant(q), tf.constant(keys), mask=tf.constant(MASK),
                    return_weights=True)
  ragged = tf.ragged.boolean_mask(tf.constant(keys), tf.constant(MASK))
  r_pooled, r_w = layer(tf.constant(q), ragged, return_weights=True)
  np.testing.assert_allclose(r_pooled, pooled, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r_w, w, rtol=1e-5, atol=1e-6)  # longest row: L
  with pytest.raises(ValueError, match="mask must be None"):
    layer(tf.constant(q), ragged, mask=tf.constant(MASK))


def _trained_looking(layer):
  """Non-trivial Dice statistics and slopes, biases (fresh ones are 0 / 1)."""
  rng = np.random.default_rng(9)
  for v in layer.variables:
    if "moving_variance" in v.name:
      v.assign(rng.uniform(0.2, 3.0, v.shape).astype(np.float32))
    elif any(k in v.name for k in ("moving_mean", "alpha", "bias")):
      v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))


def test_first_layer_split_is_the_first_layer_over_the_concatenation():
  rng = np.random.default_rng(4)
  q = rng.normal(size=(B, 5, D)).astype(np.float32)
  keys = rng.normal(size=(B, L, D)).astype(np.float32)
  layer = LocalActivationUnit((5, 3))
  layer(tf.constant(q), tf.constant(keys))
  w_q, w_k, w_p = (w.numpy() for w in layer.first_layer_split())
  qb = np.broadcast_to(q[:, :, None], (B, 5, L, D))
  kb = np.broadcast_to(keys[:, None], (B, 5, L, D))
  full = np.concatenate([qb, kb, qb - kb, qb * kb], -1) @ (
      layer.first_kernel.numpy())
  np.testing.assert_allclose(qb @ w_q + kb @ w_k + (qb * kb) @ w_p, full,
                             rtol=1e-5, atol=1e-5)


def test_inference_scores_follow_the_formula_for_every_pair():
  """a(q_n, k_l) of every candidate and behaviour, Dice at its moving
  statistics; padded keys are scored too (the caller masks them)."""
  rng = np.random.default_rng(5)
  q = rng.normal(size=(B, 5, D)).astype(np.float32)
  keys = rng.normal(size=(B, L, D)).astype(np.float32)
  layer = LocalActivationUnit((5, 3), activation="dice")
  layer(tf.constant(q), tf.constant(keys), mask=tf.constant(MASK))
  _trained_looking(layer)
  got = layer.inference_scores(tf.constant(q), tf.constant(keys)).numpy()
  assert got.shape == (B, 5, L)

  def dice(z, act):
    return ref.dice(z, act.alpha.numpy(), act.moving_mean.numpy(),
                    act.moving_variance.numpy())

  qb = np.broadcast_to(q[:, :, None], (B, 5, L, D))
  kb = np.broadcast_to(keys[:, None], (B, 5, L, D))
  x = np.concatenate([qb, kb, qb - kb, qb * kb], -1)
  h = dice(x @ layer.first_kernel.numpy() + layer.first_bias.numpy(),
           layer._first_activation)
  rest = layer._rest
  for dense, act in zip(rest._dense, rest._activations):
    h = dice(h @ dense.kernel.numpy() + dense.bias.numpy(), act)
  expected = (h @ rest._output.kernel.numpy() + rest._output.bias.numpy())
  np.testing.assert_allclose(got, expected[..., 0], rtol=1e-4, atol=1e-5)
  # The same raw scores as the layer's own pair scoring in inference mode.
  _, w = layer(tf.constant(q), tf.constant(keys), mask=tf.constant(MASK),
               return_weights=True, training=False)
  np.testing.assert_allclose(np.where(MASK[:, None], got, 0.0), w,
                             rtol=1e-5, atol=1e-6)
