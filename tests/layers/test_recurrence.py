import numpy as np
import pytest
import tensorflow as tf

import graphs
from tfrs_din.layers.recurrence import Packing, packed_gru_recurrence
from tfrs_din.ops import build, fused_kernels, packed_gru

B, T, H = 4, 6, 5
# Gaps inside rows and an empty row: a masked step is skipped wherever it is.
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 0],
                 [0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], bool)
# The gate g of each recurrence gate from u and the scale s (gru_equations).
GATES = {"none": lambda u, s: u, "AUGRU": lambda u, s: s * u,
         "AGRU": lambda u, s: s + 0.0 * u,
         "AUGRU_OFFICIAL": lambda u, s: 1.0 - (1.0 - s) * (1.0 - u)}


@pytest.fixture(params=["tensorflow_loop", "fused_kernel"])
def implementation(request):
  """Runs a test with the TensorFlow loops, then with the fused C++ kernels."""
  fused = request.param == "fused_kernel"
  if fused and build.compiler() is None:
    pytest.skip("no C++ compiler: the fused kernels cannot be built here")
  with fused_kernels(fused):
    # Where a compiler exists the library must build and be used.
    assert packed_gru.is_usable(tf.float32) == fused
    yield request.param


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, T, 3 * H)).astype(np.float32)
  attention = rng.uniform(0.1, 1.0, size=(B, T)).astype(np.float32)
  h0 = rng.normal(size=(B, H)).astype(np.float32)
  kernel = (0.5 * rng.normal(size=(H, 3 * H))).astype(np.float32)
  bias = (0.1 * rng.normal(size=(3 * H,))).astype(np.float32)
  return [tf.constant(v) for v in (x, attention, h0, kernel, bias)]


def _reference(x, attention, h0, kernel, bias, gate, mask=MASK):
  """The equations step by step over padded rows; TensorFlow differentiates."""
  h, states = h0, []
  for t in range(x.shape[1]):
    p = tf.matmul(h, kernel) + bias
    u = tf.sigmoid(x[:, t, :H] + p[:, :H])
    r = tf.sigmoid(x[:, t, H:2 * H] + p[:, H:2 * H])
    candidate = tf.tanh(x[:, t, 2 * H:] + r * p[:, 2 * H:])
    s = attention[:, t, tf.newaxis]
    g = GATES[gate](u, s)
    h = tf.where(mask[:, t, None], (1.0 - g) * h + g * candidate, h)
    states.append(h)
  return tf.stack(states, axis=1)


def _ours(x, attention, h0, kernel, bias, gate, mask=MASK):
  packing = Packing(tf.convert_to_tensor(mask))
  scale = packing.pack(attention)[:, tf.newaxis] if gate != "none" else None
  packed = packed_gru_recurrence(
      packing.pack(x), scale, packing.step_sizes, packing.initial_rows(h0),
      kernel, bias, gate=gate)
  return packing.unpack_states(packed, h0), packing.final_states(packed, h0)


def _loss(states, final):
  # Weights every step differently so that every state's gradient matters.
  w = tf.reshape(tf.range(1, tf.shape(states)[1] + 1, dtype=tf.float32),
                 [1, -1, 1])
  return tf.reduce_sum(w * tf.sin(states)) + tf.reduce_sum(final ** 2)


def test_packing_orders_rows_by_length_and_steps_by_time():
  packing = Packing(tf.constant(MASK))
  # Lengths 6, 3, 0, 3: step k runs the rows with more than k valid steps.
  np.testing.assert_array_equal(packing.step_sizes, [3, 3, 3, 1, 1, 1])
  values = tf.constant(np.arange(B * T).reshape(B, T))
  # Step 0: rows 0, 1, 3 (ties keep row order); row 1's steps are t=0, 2, 3.
  np.testing.assert_array_equal(
      packing.pack(values),
      [0, 6, 18, 1, 8, 19, 2, 9, 20, 3, 4, 5])


@pytest.mark.parametrize("gate", sorted(GATES))
def test_states_and_gradients_match_autodiff_of_the_padded_equations(
    gate, implementation):
  scaled = gate != "none"
  inputs = _inputs()
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(inputs)
    states, final = _ours(*inputs, gate)
    expected = _reference(*inputs, gate)
    ours_loss = _loss(states, final)
    expected_loss = _loss(expected, expected[:, -1])
  np.testing.assert_allclose(states, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final, expected[:, -1], rtol=1e-5, atol=1e-6)
  # The empty row never leaves its initial state.
  np.testing.assert_array_equal(states[2], np.repeat(inputs[2][2:3], T, 0))
  ours_grads = tape.gradient(ours_loss, inputs)
  expected_grads = tape.gradient(expected_loss, inputs)
  names = ["inputs", "attention", "initial_state", "kernel", "bias"]
  for name, g, e in zip(names, ours_grads, expected_grads):
    if not scaled and name == "attention":
      assert g is None and e is None
      continue
    np.testing.assert_allclose(tf.convert_to_tensor(g), e, rtol=1e-4,
                               atol=1e-5, err_msg=name)
  # Masked steps get no input gradient.
  np.testing.assert_array_equal(ours_grads[0].numpy()[~MASK], 0.0)


def test_all_rows_empty_returns_initial_states_and_their_gradient(
    implementation):
  x, attention, h0, kernel, bias = _inputs(1)
  empty = np.zeros((B, T), bool)
  with tf.GradientTape() as tape:
    tape.watch(h0)
    states, final = _ours(x, attention, h0, kernel, bias, "AUGRU",
                          mask=empty)
    loss = tf.reduce_sum(final * 3.0)
  np.testing.assert_array_equal(final, h0)
  np.testing.assert_array_equal(states, np.repeat(h0[:, None], T, 1))
  np.testing.assert_allclose(tf.convert_to_tensor(tape.gradient(loss, h0)),
                             np.full((B, H), 3.0))


def test_runs_in_a_graph_with_unknown_batch_and_length(implementation):
  spec = [tf.TensorSpec([None, None, 3 * H]), tf.TensorSpec([None, None]),
          tf.TensorSpec([None, H]), tf.TensorSpec([H, 3 * H]),
          tf.TensorSpec([3 * H]), tf.TensorSpec([None, None], tf.bool)]

  @tf.function(input_signature=spec)
  def kernel_gradient(x, attention, h0, kernel, bias, mask):
    with tf.GradientTape() as tape:
      tape.watch(kernel)
      loss = _loss(*_ours(x, attention, h0, kernel, bias, "AUGRU", mask))
    return tape.gradient(loss, kernel)

  inputs = _inputs(3)
  with tf.GradientTape() as tape:
    tape.watch(inputs[3])
    expected = _reference(*inputs, "AUGRU")
    expected = tape.gradient(_loss(expected, expected[:, -1]), inputs[3])
  np.testing.assert_allclose(kernel_gradient(*inputs, tf.constant(MASK)),
                             expected, rtol=1e-4, atol=1e-5)
  ops = graphs.op_types(kernel_gradient.get_concrete_function())
  if implementation == "fused_kernel":
    assert packed_gru.KERNEL_OPS <= ops
    assert "While" not in ops and "StatelessWhile" not in ops
  else:
    assert not packed_gru.KERNEL_OPS & ops


@pytest.mark.parametrize("gate", ["AGRU", "AUGRU", "AUGRU_OFFICIAL"])
def test_attention_gates_need_a_scale(gate):
  with pytest.raises(ValueError, match="gate_scale"):
    packed_gru_recurrence(tf.zeros([1, 3]), None, tf.constant([1]),
                          tf.zeros([1, 1]), tf.zeros([1, 3]), tf.zeros([3]),
                          gate=gate)


# The fused kernels' spelling ("augru_official") is not a Python name.
@pytest.mark.parametrize("gate", ["augru_paper", "augru_official"])
def test_unknown_gate_is_named(gate):
  with pytest.raises(ValueError, match=f"one of .*'AUGRU_OFFICIAL'.*'{gate}'"):
    packed_gru_recurrence(tf.zeros([1, 3]), tf.ones([1, 1]), tf.constant([1]),
                          tf.zeros([1, 1]), tf.zeros([1, 3]), tf.zeros([3]),
                          gate=gate)
