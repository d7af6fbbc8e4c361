"""The four implementations of tfrs_din/layers/gru_equations.py give the same
states on the same inputs: the NumPy reference, the Keras cell under
`tf.keras.layers.RNN`, the packed TensorFlow recurrence (`masked_scan`) and
the fused C++ kernel."""

import numpy as np
import pytest
import tensorflow as tf

import graphs
import reference as ref
from tfrs_din.layers import AttentionGRUCell
from tfrs_din.layers.attention_gru import masked_scan
from tfrs_din.ops import build, fused_kernels, packed_gru

B, T, D, H = 4, 6, 3, 5
# Rows of different lengths, one empty and one with a gap (a masked step
# inside the sequence keeps the state).
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0],
                 [1, 1, 1, 0, 0, 0]], bool)


def _numpy(cell, x, a):
  weights = [w.numpy() for w in (cell.kernel, cell.recurrent_kernel,
                                 cell.bias, cell.recurrent_bias)]
  h, states = np.zeros((B, H), np.float32), []
  for t in range(T):
    h = np.where(MASK[:, t, None],
                 ref.gru_step(x[:, t], a[:, t], h, *weights, cell.gate), h)
    states.append(h)
  return np.stack(states, 1)


def _keras_rnn(cell, x, a):
  inputs = x if cell.gate == "none" else np.concatenate([x, a[..., None]], -1)
  return tf.keras.layers.RNN(cell, return_sequences=True)(
      tf.constant(inputs), mask=tf.constant(MASK))


def _packed(cell, x, a, fused):
  @tf.function
  def run(x, a):
    with fused_kernels(fused):
      return masked_scan(cell, x, tf.constant(MASK),
                         None if cell.gate == "none" else a)[0]
  x, a = tf.constant(x), tf.constant(a)
  ops = graphs.op_types(run.get_concrete_function(x, a))
  assert bool(packed_gru.KERNEL_OPS & ops) == fused
  return run(x, a)


@pytest.mark.parametrize("gate", ["none", "AGRU", "AUGRU", "AUGRU_OFFICIAL"])
def test_every_implementation_gives_the_same_states(gate):
  rng = np.random.default_rng(7)
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  a = rng.uniform(size=(B, T)).astype(np.float32)
  cell = AttentionGRUCell(H, gate=gate, bias_initializer="random_normal")
  cell.build([None, D + (gate != "none")])
  expected = _numpy(cell, x, a)
  assert np.abs(expected).max() > 0.1   # the states moved
  results = {"keras_rnn": _keras_rnn(cell, x, a),
             "packed_tf_loop": _packed(cell, x, a, fused=False)}
  if build.compiler() is not None:
    results["fused_kernel"] = _packed(cell, x, a, fused=True)
  for name, states in results.items():
    np.testing.assert_allclose(states, expected, rtol=1e-5, atol=1e-6,
                               err_msg=name)
  if build.compiler() is None:
    pytest.skip("no C++ compiler: the fused kernel was not compared")
