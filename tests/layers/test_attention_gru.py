import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from tfrs_din.layers import (AGRUCell, AUGRUCell, AttentionGRUCell,
                             InterestEvolution)
from tfrs_din.layers.attention_gru import masked_scan

B, T, D, H = 3, 5, 4, 6
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)


def _data():
  rng = np.random.default_rng(3)
  return (rng.normal(size=(B, T, D)).astype(np.float32),
          rng.uniform(size=(B, T)).astype(np.float32))


def _weights(cell):
  return [w.numpy() for w in (cell.kernel, cell.recurrent_kernel, cell.bias,
                              cell.recurrent_bias)]


def _numpy_scan(cell, x, a, mask, gate):
  h = np.zeros((x.shape[0], cell.units), np.float32)
  for t in range(x.shape[1]):
    new = ref.gru_step(x[:, t], a[:, t], h, *_weights(cell), gate)
    h = np.where(mask[:, t, None], new, h)
  return h


@pytest.mark.parametrize("gate", ["none", "AGRU", "AUGRU", "AUGRU_OFFICIAL"])
def test_masked_scan_matches_numpy(gate):
  x, a = _data()
  cell = AttentionGRUCell(H, gate=gate)
  states, final = masked_scan(cell, tf.constant(x), tf.constant(MASK),
                              None if gate == "none" else tf.constant(a))
  np.testing.assert_allclose(final, _numpy_scan(cell, x, a, MASK, gate),
                             rtol=1e-5, atol=1e-5)
  # A padded step leaves the state unchanged.
  np.testing.assert_allclose(states[0, 2], states[0, 4])
  np.testing.assert_allclose(states[2, 1], final[2])


def test_cells_work_in_keras_rnn_with_same_equation():
  x, a = _data()
  for cls, gate in ((AUGRUCell, "AUGRU"), (AGRUCell, "AGRU")):
    cell = cls(H)
    rnn = tf.keras.layers.RNN(cell)
    out = rnn(tf.constant(np.concatenate([x, a[..., None]], -1)),
              mask=tf.constant(MASK))
    np.testing.assert_allclose(out, _numpy_scan(cell, x, a, MASK, gate),
                               rtol=1e-5, atol=1e-5)
    assert cell.get_config()["gate"] == gate


def test_official_augru_is_a_plain_gru_at_zero_and_the_candidate_at_one():
  """u' = u + a (1 - u): a = 0 gives the GRU's update, a = 1 gives h = h~."""
  x, _ = _data()
  gru = AttentionGRUCell(H, gate="none", bias_initializer="random_normal")
  gru.build([None, D])
  official = AttentionGRUCell(H, gate="AUGRU_OFFICIAL")
  official.build([None, D + 1])
  official.set_weights(gru.get_weights())
  h = np.random.default_rng(1).normal(size=(B, H)).astype(np.float32)
  projected = gru.project_inputs(tf.constant(x[:, 0]))
  np.testing.assert_allclose(
      official.step(projected, tf.zeros([B]), tf.constant(h)),
      gru.step(projected, None, tf.constant(h)), rtol=1e-6, atol=1e-6)
  weights = [w.numpy() for w in (gru.kernel, gru.recurrent_kernel, gru.bias,
                                 gru.recurrent_bias)]
  xw = x[:, 0] @ weights[0] + weights[2]
  hu = h @ weights[1] + weights[3]
  r = 1 / (1 + np.exp(-(xw[:, H:2 * H] + hu[:, H:2 * H])))
  candidate = np.tanh(xw[:, 2 * H:] + r * hu[:, 2 * H:])
  np.testing.assert_allclose(
      official.step(projected, tf.ones([B]), tf.constant(h)), candidate,
      rtol=1e-5, atol=1e-6)


def test_attention_zero_freezes_agru_and_augru():
  x, _ = _data()
  zeros = np.zeros((B, T), np.float32)
  for gate in ("AGRU", "AUGRU"):
    _, final = masked_scan(AttentionGRUCell(H, gate=gate), tf.constant(x),
                           tf.constant(MASK), tf.constant(zeros))
    np.testing.assert_allclose(final, 0.0, atol=1e-7)


@pytest.mark.parametrize("gru_type",
                         ["AIGRU", "AGRU", "AUGRU", "AUGRU_OFFICIAL"])
def test_interest_evolution_matches_numpy_and_ignores_padding(gru_type):
  x, a = _data()
  layer = InterestEvolution(H, gru_type=gru_type)
  out = layer(tf.constant(x), tf.constant(a), tf.constant(MASK)).numpy()
  if gru_type == "AIGRU":
    expected = _numpy_scan(layer.cell, x * a[..., None], a, MASK, "none")
  else:
    expected = _numpy_scan(layer.cell, x, a, MASK, gru_type)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  x2 = np.where(MASK[..., None], x, -7.0).astype(np.float32)
  a2 = np.where(MASK, a, 0.9).astype(np.float32)
  out2 = layer(tf.constant(x2), tf.constant(a2), tf.constant(MASK)).numpy()
  np.testing.assert_allclose(out, out2, rtol=1e-6)
  assert InterestEvolution.from_config(layer.get_config()).gru_type == gru_type


def test_invalid_gru_type_names_the_choices():
  with pytest.raises(ValueError, match="AUGRU"):
    InterestEvolution(4, gru_type="LSTM")


@pytest.mark.parametrize("gru_type", ["AIGRU", "AGRU", "AUGRU"])
def test_interest_evolution_with_n_candidates_matches_one_at_a_time(gru_type):
  x, a = _data()
  rng = np.random.default_rng(5)
  per_candidate = rng.uniform(size=(a.shape[0], 3, a.shape[1])).astype(
      np.float32)  # [B, N, T]
  layer = InterestEvolution(H, gru_type=gru_type)
  final, sequence = layer(tf.constant(x), tf.constant(per_candidate),
                          tf.constant(MASK), return_sequences=True)
  assert final.shape == (a.shape[0], 3, H)
  assert sequence.shape == (a.shape[0], 3, a.shape[1], H)
  for n in range(3):
    one = layer(tf.constant(x), tf.constant(per_candidate[:, n]),
                tf.constant(MASK)).numpy()
    np.testing.assert_allclose(final[:, n], one, rtol=1e-5, atol=1e-6)
