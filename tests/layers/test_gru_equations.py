"""The four implementations of tfrs_din/layers/gru_equations.py give the same
states on the same inputs: the NumPy reference, the Keras cell under
`tf.keras.layers.RNN`, the packed TensorFlow recurrence (`masked_scan`) and
the fused C++ kernel; the module's public functions follow its formulas."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

import graphs
import reference as ref
from tfrs_din.layers import AttentionGRUCell
from tfrs_din.layers import gru_equations as eq
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


# The public equations (`gru_equations.step`, `update_gate`, ...) -------------
GATE_FORMULAS = {   # g_t of the module docstring, from u_t and a_t
    "none": lambda u, a: u, "AGRU": lambda u, a: a + 0.0 * u,
    "AUGRU": lambda u, a: a * u,
    "AUGRU_OFFICIAL": lambda u, a: 1.0 - (1.0 - a) * (1.0 - u)}


@pytest.mark.parametrize("gate", eq.GATES)
def test_update_gate_and_its_gradients_follow_the_formulas(gate):
  rng = np.random.default_rng(2)
  u = tf.constant(rng.uniform(size=(B, H)).astype(np.float32))
  a = tf.constant(rng.uniform(size=(B, 1)).astype(np.float32))
  d_g = tf.constant(rng.normal(size=(B, H)).astype(np.float32))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([u, a])
    g = tf.broadcast_to(eq.update_gate(gate, u, a), [B, H])
    expected = GATE_FORMULAS[gate](u.numpy(), a.numpy())
    loss = tf.reduce_sum(g * d_g)
  np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-7)
  d_u, d_a = eq.update_gate_gradients(gate, u, a, d_g)
  auto_u, auto_a = tape.gradient(loss, [u, a])
  np.testing.assert_allclose(
      d_u, np.zeros([B, H]) if auto_u is None else auto_u, atol=1e-6)
  if gate == "none":
    assert d_a is None and auto_a is None
  else:   # element-wise: summed over the units a_t was broadcast to
    np.testing.assert_allclose(tf.reduce_sum(d_a, 1, keepdims=True), auto_a,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gate", eq.GATES)
def test_step_is_the_reference_step_in_either_layout(gate):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(B, D)).astype(np.float32)
  a = rng.uniform(size=(B,)).astype(np.float32)
  h = rng.normal(size=(B, H)).astype(np.float32)
  kernel, rec_kernel = (rng.normal(size=s).astype(np.float32) * 0.5
                        for s in ((D, 3 * H), (H, 3 * H)))
  bias, rec_bias = (rng.normal(size=3 * H).astype(np.float32) * 0.1
                    for _ in range(2))
  expected = ref.gru_step(x, a, h, kernel, rec_kernel, bias, rec_bias, gate)
  projected, product = x @ kernel + bias, h @ rec_kernel + rec_bias
  scale = None if gate == "none" else tf.constant(a[:, None])
  rows = eq.step(gate, tf.constant(projected), tf.constant(product),
                 tf.constant(h), scale)
  np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-6)
  # Feature-major ([H, rows], as the fast scorer runs it), and one input
  # broadcast over rows that differ in state and attention.
  columns = eq.step(gate, tf.constant(projected.T), tf.constant(product.T),
                    tf.constant(h.T), None if scale is None
                    else tf.transpose(scale), axis=-2)
  np.testing.assert_allclose(tf.transpose(columns), expected, rtol=1e-5,
                             atol=1e-6)
  shared = eq.step(gate, tf.constant(projected[:1].T), tf.constant(product.T),
                   tf.constant(h.T), None if scale is None
                   else tf.transpose(scale), axis=-2)
  np.testing.assert_allclose(
      tf.transpose(shared), ref.gru_step(np.repeat(x[:1], B, 0), a, h, kernel,
                                         rec_kernel, bias, rec_bias, gate),
      rtol=1e-5, atol=1e-6)


def test_one_name_per_gate_and_one_mapping_to_the_kernel_attr():
  assert tuple(eq.KERNEL_GATES) == eq.GATES
  source = (pathlib.Path(packed_gru.__file__).parent / "packed_gru.cc"
            ).read_text()
  for attr in eq.KERNEL_GATES.values():
    assert f'name == "{attr}"' in source
  with pytest.raises(ValueError, match="gate must be one of"):
    AttentionGRUCell(2, gate="augru_official")
