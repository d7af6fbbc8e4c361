import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from tfrs_din.layers import InterestExtractor

B, T, D, H = 3, 5, 4, 6
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)


def _data():
  rng = np.random.default_rng(4)
  return (rng.normal(size=(B, T, D)).astype(np.float32),
          rng.normal(size=(B, T, D)).astype(np.float32))


def _numpy_aux_logit(layer, pairs):
  bn = layer._aux_norm
  gamma, beta, mean, var = (w.numpy() for w in
                            (bn.gamma, bn.beta, bn.moving_mean,
                             bn.moving_variance))
  h = (pairs - mean) / np.sqrt(var + bn.epsilon) * gamma + beta
  for dense in layer._aux_net._dense:
    kernel, bias = (w.numpy() for w in dense.weights)
    h = ref.sigmoid(h @ kernel + bias)
  kernel, bias = (w.numpy() for w in layer._aux_net._output.weights)
  return (h @ kernel + bias)[:, 0]


def test_states_zero_at_padding_and_auxiliary_loss_matches_numpy():
  behaviours, negatives = _data()
  layer = InterestExtractor(H, aux_hidden_units=(5, 3),
                            aux_reduction="step_mean")
  states = layer(tf.constant(behaviours), mask=tf.constant(MASK))
  assert states.shape == (B, T, H)
  np.testing.assert_array_equal(states.numpy()[~MASK], 0.0)
  loss = layer.auxiliary_loss(states, tf.constant(behaviours),
                              tf.constant(negatives), tf.constant(MASK),
                              training=False)
  s = states.numpy()
  terms = []
  for b in range(B):
    for t in range(T - 1):
      if MASK[b, t] and MASK[b, t + 1]:
        pos = _numpy_aux_logit(layer, np.concatenate([s[b, t], behaviours[b, t + 1]])[None])
        neg = _numpy_aux_logit(layer, np.concatenate([s[b, t], negatives[b, t + 1]])[None])
        terms.append(-np.log(ref.sigmoid(pos)) - np.log(1 - ref.sigmoid(neg)))
  assert len(terms) == 2 + 4 + 0
  np.testing.assert_allclose(float(loss), np.mean(terms), rtol=1e-5)


def test_padded_behaviours_and_negatives_do_not_leak():
  behaviours, negatives = _data()
  layer = InterestExtractor(H)
  mask = tf.constant(MASK)

  def run(b, n):
    states = layer(tf.constant(b), mask=mask)
    return states.numpy(), float(layer.auxiliary_loss(
        states, tf.constant(b), tf.constant(n), mask, training=True))

  s1, l1 = run(behaviours, negatives)
  s2, l2 = run(np.where(MASK[..., None], behaviours, 9.0).astype(np.float32),
               np.where(MASK[..., None], negatives, -9.0).astype(np.float32))
  np.testing.assert_allclose(s1, s2, rtol=1e-6)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)


def test_loss_prefers_true_next_behaviour_after_training():
  """The auxiliary net learns to tell the next behaviour from a random one."""
  rng = np.random.default_rng(0)
  steps = rng.normal(size=(64, 8, 4)).astype(np.float32)
  behaviours = np.cumsum(steps * 0.3, axis=1).astype(np.float32)  # smooth walk
  negatives = rng.normal(size=(64, 8, 4)).astype(np.float32) * 2
  mask = tf.ones([64, 8], tf.bool)
  layer = InterestExtractor(8, aux_hidden_units=(16, 8))
  opt = tf.keras.optimizers.Adam(0.02)
  first = None
  for _ in range(60):
    with tf.GradientTape() as tape:
      states = layer(tf.constant(behaviours), mask=mask)
      loss = layer.auxiliary_loss(states, tf.constant(behaviours),
                                  tf.constant(negatives), mask, training=True)
    first = float(loss) if first is None else first
    grads = tape.gradient(loss, layer.trainable_variables)
    opt.apply_gradients(zip(grads, layer.trainable_variables))
  assert first > 1.2 and float(loss) < 0.6 * first
  assert InterestExtractor.from_config(layer.get_config()).units == 8


def test_auxiliary_loss_normalisations_follow_their_formulas():
  """step_mean: sum / |V|; padded_mean (the official code): sum / (B *
  (T_max - 1)), T_max the longest history."""
  behaviours, negatives = _data()
  losses = {}
  reference = None
  for reduction in ("step_mean", "padded_mean"):
    layer = InterestExtractor(H, aux_reduction=reduction)
    states = layer(tf.constant(behaviours), mask=tf.constant(MASK))
    layer.auxiliary_loss(states, behaviours, negatives, MASK)
    if reference is None:
      reference = layer
    else:
      layer.set_weights(reference.get_weights())
    states = layer(tf.constant(behaviours), mask=tf.constant(MASK))
    losses[reduction] = float(layer.auxiliary_loss(
        states, behaviours, negatives, MASK, training=False))
    assert layer.get_config()["aux_reduction"] == reduction
  total = losses["step_mean"] * (2 + 4 + 0)         # |V| = 6 steps
  assert losses["padded_mean"] == pytest.approx(total / (B * (5 - 1)),
                                                rel=1e-5)
  empty = np.zeros((B, T), bool)
  for reduction in losses:
    layer = InterestExtractor(H, aux_reduction=reduction)
    states = layer(tf.constant(behaviours), mask=tf.constant(empty))
    assert float(layer.auxiliary_loss(states, behaviours, negatives,
                                      empty)) == 0.0
  with pytest.raises(ValueError, match="aux_reduction"):
    InterestExtractor(H, aux_reduction="sum")


def test_padded_mean_over_max_steps_does_not_depend_on_the_batching():
  """With max_steps = M the loss is sum / (B (M - 1)): a batch's loss is
  the example-weighted mean of its parts' losses, whatever each part is
  padded to (length-grouped batches weigh their steps as random ones)."""
  behaviours, negatives = _data()
  layer = InterestExtractor(H, aux_reduction="padded_mean", max_steps=50)
  assert InterestExtractor.from_config(layer.get_config()).max_steps == 50

  def loss(rows, width):
    mask = MASK[rows, :width]
    states = layer(tf.constant(behaviours[rows, :width]),
                   mask=tf.constant(mask))
    return float(layer.auxiliary_loss(states, behaviours[rows, :width],
                                      negatives[rows, :width], mask,
                                      training=False))

  whole = loss([0, 1, 2], 5)
  short, long_ = loss([0, 2], 3), loss([1], 5)     # each at its own width
  assert whole == pytest.approx((2 * short + 1 * long_) / 3, rel=1e-5)
  def like_layer(**kwargs):
    other = InterestExtractor(H, **kwargs)
    states = other(tf.constant(behaviours), mask=tf.constant(MASK))
    other.auxiliary_loss(states, behaviours, negatives, MASK)  # builds it
    other.set_weights(layer.get_weights())
    return other

  step_mean = like_layer(aux_reduction="step_mean")
  states = step_mean(tf.constant(behaviours), mask=tf.constant(MASK))
  total = 6 * float(step_mean.auxiliary_loss(states, behaviours, negatives,
                                             MASK, training=False))
  assert whole == pytest.approx(total / (B * 49), rel=1e-5)
  # Without max_steps the batch's longest history sets T: a part of short
  # histories is weighed more, which is what max_steps removes.
  free = like_layer(aux_reduction="padded_mean")
  mask = MASK[[0, 2], :3]
  states = free(tf.constant(behaviours[[0, 2], :3]), mask=tf.constant(mask))
  assert float(free.auxiliary_loss(
      states, behaviours[[0, 2], :3], negatives[[0, 2], :3], mask,
      training=False)) == pytest.approx(short * 49 / 2, rel=1e-5)
