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
