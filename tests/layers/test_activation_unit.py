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


def _dice_statistics(layer):
  """The moving mean and variance of every Dice in the unit."""
  from tfrs_din.layers.dice import Dice  # pylint: disable=g-import-not-at-top
  dices = [layer._first_activation] + [
      m for m in layer._rest.submodules if isinstance(m, Dice)]
  assert len(dices) == 2
  return [v.numpy() for d in dices for v in (d.moving_mean, d.moving_variance)]


@pytest.mark.parametrize("ragged", [False, True])
def test_padded_statistics_equal_scoring_every_position(ragged):
  # FuxiCTR and DeepCTR-Torch score every position up to the batch's longest
  # history, padded ones with a zero behaviour, and Dice's batch statistics
  # see them all. The option gets the same scores and moving statistics
  # from one weighted pair per row.
  q, keys = _inputs()
  keys = keys * MASK[:, :, None]         # padded behaviours embed to zero
  width = MASK.sum(1).max()              # the longest history: all L here
  option = LocalActivationUnit((5, 3), padded_statistics=True)
  every = LocalActivationUnit((5, 3))
  default = LocalActivationUnit((5, 3))
  for layer in (option, every, default):
    layer(tf.constant(q), tf.constant(keys), mask=tf.constant(MASK))
  every.set_weights(option.get_weights())
  default.set_weights(option.get_weights())
  given = (tf.ragged.boolean_mask(tf.constant(keys), tf.constant(MASK))
           if ragged else tf.constant(keys))
  mask = None if ragged else tf.constant(MASK)
  pooled, w = option(tf.constant(q), given, mask=mask, return_weights=True,
                     training=True)
  e_pooled, e_w = every(tf.constant(q), tf.constant(keys[:, :width]),
                        mask=tf.ones([B, width], tf.bool),
                        return_weights=True, training=True)
  np.testing.assert_allclose(pooled, e_pooled, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(w, np.where(MASK, e_w, 0.0), rtol=1e-5,
                             atol=1e-6)
  for mine, theirs in zip(_dice_statistics(option), _dice_statistics(every)):
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-7)
  # Only the statistics differ from the default: it sees valid pairs only.
  d_pooled = default(tf.constant(q), given, mask=mask, training=True)
  assert np.abs(d_pooled.numpy() - pooled.numpy()).max() > 1e-3
  # Inference uses the moving statistics either way.
  default.set_weights(option.get_weights())
  np.testing.assert_allclose(
      default(tf.constant(q), given, mask=mask, training=False),
      option(tf.constant(q), given, mask=mask, training=False), rtol=1e-6)
  config = option.get_config()
  assert LocalActivationUnit.from_config(config).padded_statistics is True


@pytest.mark.parametrize("training", [True, False])
def test_initial_weight_one_starts_as_sum_pooling(training):
  q, keys = _inputs()
  layer = LocalActivationUnit((5, 3), activation="dice", initial_weight=1.0)
  layer(tf.constant(q), tf.constant(keys), mask=tf.constant(MASK))
  # The scoring net's output is w = 1 + a(q, k): with a = 0 (its output
  # layer zeroed), DIN's pooling is the masked sum of the behaviours.
  for v in layer._rest._output.weights:
    v.assign(tf.zeros_like(v))
  pooled, w = layer(tf.constant(q), tf.constant(keys), mask=tf.constant(MASK),
                    return_weights=True, training=training)
  np.testing.assert_array_equal(w, MASK.astype(np.float32))
  np.testing.assert_allclose(pooled, (keys * MASK[..., None]).sum(1),
                             rtol=1e-6, atol=1e-6)
  # In general it adds 1 to every valid weight and nothing at padding.
  tf.keras.utils.set_random_seed(3)
  plain = LocalActivationUnit((5, 3), activation="sigmoid")
  shifted = LocalActivationUnit((5, 3), activation="sigmoid",
                                initial_weight=1.0)
  args = (tf.constant(q), tf.constant(keys))
  plain(*args, mask=tf.constant(MASK))
  shifted(*args, mask=tf.constant(MASK))
  shifted.set_weights(plain.get_weights())
  _, w0 = plain(*args, mask=tf.constant(MASK), return_weights=True)
  _, w1 = shifted(*args, mask=tf.constant(MASK), return_weights=True)
  np.testing.assert_allclose(w1, np.where(MASK, w0.numpy() + 1.0, 0.0),
                             rtol=1e-6, atol=1e-6)
  clone = LocalActivationUnit.from_config(shifted.get_config())
  assert clone.initial_weight == 1.0
