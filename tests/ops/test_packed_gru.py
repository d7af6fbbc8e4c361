"""The fused GRU kernels: where they are used, and their input checks.

Their numbers are tested against autodiff of the GRU equations in
tests/layers/test_recurrence.py (each test runs with and without them).
"""

import numpy as np
import pytest
import tensorflow as tf

import graphs
from tfrs_din.data.synthetic import SyntheticConfig, generate
from tfrs_din.layers.recurrence import packed_gru_recurrence
from tfrs_din.models import DIENModel
from tfrs_din.ops import build, fused_kernels, packed_gru


pytestmark = pytest.mark.skipif(
    build.compiler() is None,
    reason="no C++ compiler: the fused kernels cannot be built here")


def _traced_recurrence_ops() -> set:
  @tf.function
  def run(x, scale):
    return packed_gru_recurrence(x, scale, tf.constant([2, 1]),
                                 tf.zeros([2, 2]), tf.ones([2, 6]),
                                 tf.zeros([6]))
  return graphs.op_types(run.get_concrete_function(tf.zeros([3, 6]),
                                             tf.ones([3, 1])))


def test_kernels_are_used_only_inside_fused_kernels(monkeypatch):
  assert not packed_gru.KERNEL_OPS & _traced_recurrence_ops()
  with fused_kernels():
    assert "TfrsDinPackedGruForward" in _traced_recurrence_ops()
    with fused_kernels(enabled=False):
      assert not packed_gru.KERNEL_OPS & _traced_recurrence_ops()
    monkeypatch.setenv("TFRS_DIN_FUSED_KERNELS", "0")
    assert not packed_gru.KERNEL_OPS & _traced_recurrence_ops()
    assert not packed_gru.is_usable(tf.float32)
  # float16/bfloat16 recurrences keep the TensorFlow loop.
  monkeypatch.delenv("TFRS_DIN_FUSED_KERNELS")
  with fused_kernels():
    assert packed_gru.is_usable(tf.float32)
    assert not packed_gru.is_usable(tf.bfloat16)


def test_dien_trains_with_the_kernels_and_matches_the_loop():
  data = generate(SyntheticConfig(num_users=40, max_history=8, seed=2))
  batch = next(iter(data.dataset("train", 16)))
  model = DIENModel(data.spec, mlp_units=(8,), seed=0)
  model.compile(tf.keras.optimizers.SGD(0.1))
  model(batch)
  assert packed_gru.KERNEL_OPS <= graphs.op_types(tf.function(model.train_step)
                            .get_concrete_function(batch))

  def loss_and_gradients(enabled):
    with fused_kernels(enabled), tf.GradientTape() as tape:
      loss = model.compute_loss(batch, training=True)
    return loss, tape.gradient(loss, model.trainable_variables)

  fused_loss, fused_grads = loss_and_gradients(True)
  loop_loss, loop_grads = loss_and_gradients(False)
  # Dice's batch statistics move with each training call: compare losses
  # and gradients from the same model state, without applying updates.
  np.testing.assert_allclose(fused_loss, loop_loss, rtol=1e-4)
  for variable, f, l in zip(model.trainable_variables, fused_grads,
                            loop_grads):
    np.testing.assert_allclose(tf.convert_to_tensor(f),
                               tf.convert_to_tensor(l), rtol=1e-3, atol=1e-5,
                               err_msg=variable.name)


@pytest.mark.parametrize("step_sizes, message", [
    ([2, 2], "step_sizes sum to 4 but inputs have 3 rows"),
    ([1, 2], "non-increasing"),
    ([3], "initial_state rows"),
])
def test_bad_step_sizes_are_named(step_sizes, message):
  ops = packed_gru.library()
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    ops.tfrs_din_packed_gru_forward(
        tf.zeros([3, 6]), tf.zeros([0, 1]), tf.constant(step_sizes, tf.int32),
        tf.zeros([2, 2]), tf.zeros([2, 6]), tf.zeros([6]), gate="gru")


def test_scale_shape_is_checked():
  ops = packed_gru.library()
  with pytest.raises(tf.errors.InvalidArgumentError, match="gate_scale"):
    ops.tfrs_din_packed_gru_forward(
        tf.zeros([3, 6]), tf.zeros([2, 1]), tf.constant([2, 1]),
        tf.zeros([2, 2]), tf.zeros([2, 6]), tf.zeros([6]), gate="augru")


def _reference_states(x, scale, lengths, h0, kernel, bias, gate):
  """The packed GRU by the equations, row by row, in TensorFlow ops (so
  that autodiff gives reference gradients): [P, H] in packed order."""
  units = kernel.shape[0]
  order = np.argsort(-np.asarray(lengths), kind="stable")
  steps = max(lengths, default=0)
  sizes = [int((np.asarray(lengths) > k).sum()) for k in range(steps)]
  offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
  states = [None] * int(sum(sizes))
  for rank, row in enumerate(order):
    h = h0[rank:rank + 1]
    for k in range(lengths[row]):
      position = offsets[k] + rank
      x_t = x[position:position + 1]
      projected = tf.matmul(h, kernel) + bias
      ur = tf.sigmoid(x_t[:, :2 * units] + projected[:, :2 * units])
      u, r = ur[:, :units], ur[:, units:]
      candidate = tf.tanh(x_t[:, 2 * units:] + r * projected[:, 2 * units:])
      s = None if scale is None else scale[position:position + 1]
      g = {"gru": lambda: u, "augru": lambda: s * u, "agru": lambda: s,
           "augru_official": lambda: u + s * (1.0 - u)}[gate]()
      h = h + g * (candidate - h)
      states[position] = h
  if not states:
    return tf.zeros([0, units]), sizes
  return tf.concat(states, 0), sizes


@pytest.mark.parametrize("gate", ["gru", "augru", "agru", "augru_official"])
@pytest.mark.parametrize("lengths", [
    [3, 0, 64, 1, 7, 7],    # longer than the default max_history, empty rows
    [1, 1, 1],              # one step
    [0, 0],                 # no step at all: nothing to run
], ids=["long", "one-step", "empty"])
def test_kernels_accept_any_sequence_length(gate, lengths):
  """Any number of steps (the longest history of the batch, whatever the
  padding), with states and every gradient equal to the equations'."""
  units, rng = 3, np.random.default_rng(len(lengths))
  size, running = sum(lengths), sum(n > 0 for n in lengths)
  x = tf.constant(rng.normal(size=[size, 3 * units]), tf.float32)
  scale = (None if gate == "gru" else
           tf.constant(rng.uniform(size=[size, 1]), tf.float32))
  h0 = tf.constant(rng.normal(size=[running, units]), tf.float32)
  kernel = tf.constant(rng.normal(size=[units, 3 * units]) * 0.5, tf.float32)
  bias = tf.constant(rng.normal(size=[3 * units]) * 0.1, tf.float32)
  inputs = [x, h0, kernel, bias] + ([] if scale is None else [scale])
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(inputs)
    expected, sizes = _reference_states(x, scale, lengths, h0, kernel, bias,
                                        gate)
    with fused_kernels():
      got = packed_gru.fused_recurrence(
          x, scale, tf.constant(sizes, tf.int32), h0, kernel, bias, gate)
    # A fixed random projection of the states: every state gets a gradient.
    weights = tf.constant(rng.normal(size=[size, units]), tf.float32)
    loss, loss_expected = (tf.reduce_sum(s * weights)
                           for s in (got, expected))
  assert got.shape == (size, units)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  for value in inputs:
    g = tape.gradient(loss, value)
    g_expected = tape.gradient(loss_expected, value,
                               unconnected_gradients="zero")
    np.testing.assert_allclose(g, g_expected, rtol=1e-4, atol=1e-5)
