import gc

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.optimizers import (FUSED_DENSE_MIN_ELEMENTS, LazyAdam,
                                          adam_l2_shrink)


def _numpy_lazy_adam(w, m, v, rows, grad, step, lr=0.01, b1=0.9, b2=0.999,
                     eps=1e-7):
  alpha = lr * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
  for j in np.unique(rows):
    g = grad[rows == j].sum(0)
    m[j] = b1 * m[j] + (1 - b1) * g
    v[j] = b2 * v[j] + (1 - b2) * g * g
    w[j] -= alpha * m[j] / (np.sqrt(v[j]) + eps)
  return w, m, v


def test_updates_only_present_rows_like_adam_on_those_rows():
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(10, 3)).astype(np.float32)
  table = tf.Variable(w0)
  opt = LazyAdam(learning_rate=0.01)
  w, m, v = w0.astype(np.float64), np.zeros((10, 3)), np.zeros((10, 3))
  for step, rows in enumerate([[1, 4, 4], [4, 7], [1, 2, 9, 9, 9]], start=1):
    grad = rng.normal(size=(len(rows), 3)).astype(np.float32)
    opt.apply_gradients([(tf.IndexedSlices(tf.constant(grad),
                                           tf.constant(rows), tf.constant([10, 3])),
                          table)])
    w, m, v = _numpy_lazy_adam(w, m, v, np.array(rows), grad, step)
  np.testing.assert_allclose(table.numpy(), w, rtol=1e-5, atol=1e-6)
  untouched = [0, 3, 5, 6, 8]
  np.testing.assert_array_equal(table.numpy()[untouched], w0[untouched])


def test_dense_gradients_get_plain_adam():
  a, b = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0])
  LazyAdam(0.1).apply_gradients([(tf.constant([0.5, -1.0]), a)])
  tf.keras.optimizers.Adam(0.1).apply_gradients([(tf.constant([0.5, -1.0]), b)])
  np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_large_dense_gradients_take_the_fused_step_and_match_keras_adam():
  # A table under the dense L2 gets a dense gradient; above the threshold
  # LazyAdam updates it in one XLA kernel, with Keras' Adam's arithmetic.
  rng = np.random.default_rng(1)
  rows = FUSED_DENSE_MIN_ELEMENTS // 4 + 3
  w0 = rng.normal(size=(rows, 4)).astype(np.float32)
  a, b = tf.Variable(w0), tf.Variable(w0)
  lazy, keras = LazyAdam(0.01), tf.keras.optimizers.Adam(0.01)
  for _ in range(3):
    grad = tf.constant(rng.uniform(0.1, 2.0, (rows, 4)).astype(np.float32))
    lazy.apply_gradients([(grad, a)])
    keras.apply_gradients([(grad, b)])
  moved = np.abs(b.numpy() - w0)
  assert moved.min() > 0.02  # every coordinate moved, about 3 lr
  # float32 rounding of a differently fused sum: a few ulps of w, 3e-5 of
  # the motion
  np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(lazy._velocities[0].numpy(),
                             keras._velocities[0].numpy(), rtol=1e-5)


def _train_a_fresh_table(shape, row_l2):
  """Two steps of a new table and optimizer in a tf.function, as `fit` runs
  them: a dense gradient (the dense L2) or a sparse one with the rows' L2."""
  table = tf.Variable(tf.ones(shape))
  opt = LazyAdam(0.1, row_l2=row_l2, row_l2_every=1)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      if row_l2:
        loss = tf.reduce_sum(tf.gather(table, [0, 1]))
      else:
        loss = tf.reduce_sum(tf.square(table))
    opt.apply_gradients([(tape.gradient(loss, table), table)])

  step()
  step()
  return table.numpy()


@pytest.mark.parametrize("row_l2", [0.0, 0.5])
def test_a_second_optimizer_after_the_first_is_gone_gets_its_own_kernels(row_l2):
  # The fused kernels once were module-level tf.functions: a new table whose
  # Python id reused a deleted one's hit the old trace and failed.
  shape = (FUSED_DENSE_MIN_ELEMENTS // 4, 4)
  first = _train_a_fresh_table(shape, row_l2)
  gc.collect()
  for _ in range(3):
    again = _train_a_fresh_table(shape, row_l2)
    gc.collect()
    np.testing.assert_array_equal(again, first)
  if row_l2:  # an absent row, shrunk twice: w = 1 - 2 lr (the linear regime)
    np.testing.assert_allclose(first[5], 1 - 2 * 0.1, rtol=1e-6)
  else:  # g = 2 w, two steps of Adam by hand
    m, v, w = 0.0, 0.0, 1.0
    for t in (1, 2):
      g = 2 * w
      m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
      w -= 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-7)
    # 1e-5: the bias correction 1 - beta_2^t in float32 is off by 1.3e-5
    np.testing.assert_allclose(first, w, rtol=1e-5)


def test_trains_a_model_and_rejects_amsgrad():
  with pytest.raises(ValueError, match="amsgrad"):
    LazyAdam(amsgrad=True)
  emb = tf.keras.layers.Embedding(50, 4)
  ids = tf.constant([[1, 2], [3, 4]])
  opt = LazyAdam(0.1)
  first = None
  for _ in range(40):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(emb(ids) - 1.0))
    first = float(loss) if first is None else first
    grads = tape.gradient(loss, emb.trainable_variables)
    assert isinstance(grads[0], tf.IndexedSlices)
    opt.apply_gradients(zip(grads, emb.trainable_variables))
  assert float(loss) < 0.05 * first


def _integrated_shrink(w, v, lr, l2, steps, eps=1e-7, substeps=20000):
  """d|w|/dk = -lr l2 |w| / max(sqrt(v) + eps, l2 |w|), by small Euler steps."""
  a, s = np.abs(w).astype(np.float64), np.sqrt(v) + eps
  dk = steps / substeps
  for _ in range(substeps):
    a = np.maximum(a - dk * lr * l2 * a / np.maximum(s, l2 * a), 0.0)
  return np.sign(w) * a


def test_adam_l2_shrink_is_the_integrated_motion_in_both_regimes():
  # lambda |w| > s (linear, then exponential after crossing) and < s.
  w = np.array([0.5, -0.5, 0.05, -0.02, 0.3, 1e-4, 0.2])
  v = np.array([0.0, 0.25, 1e-6, 1e-2, 4e-4, 0.0, 1e-8])
  lr, l2, steps = 0.01, 1.0, 30.0
  got = adam_l2_shrink(tf.constant(w, tf.float64), tf.constant(v, tf.float64),
                       tf.constant(lr, tf.float64), l2, steps).numpy()
  want = _integrated_shrink(w, v, lr, l2, steps)
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)
  assert abs(got[0]) == pytest.approx(0.5 - lr * steps)  # linear all along
  assert got[1] == pytest.approx(-0.5 * np.exp(-lr * l2 / (0.5 + 1e-7) * steps))
  assert got[5] == 0.0 and np.all(np.sign(got[got != 0]) == np.sign(w[got != 0]))


def _numpy_shrink(w, v, lr, l2, steps, eps=1e-7):
  a, s = np.abs(w), np.sqrt(v) + eps
  linear = np.maximum(a - s / l2, 0.0) / lr
  exponential = np.minimum(a, s / l2) * np.exp(
      -(lr * l2 / s) * np.maximum(steps - linear, 0.0))
  return np.sign(w) * np.where(steps <= linear, a - lr * steps, exponential)


def test_row_l2_shrinks_every_row_once_per_period():
  rng = np.random.default_rng(1)
  w0 = rng.normal(scale=0.1, size=(6, 2)).astype(np.float32)
  table = tf.Variable(w0)
  lr, l2, b2 = 0.01, 0.05, 0.999
  opt = LazyAdam(lr, row_l2=l2, row_l2_every=3)
  w, m, v = w0.astype(np.float64), np.zeros((6, 2)), np.zeros((6, 2))
  batches = [[0], [0, 1], [0], [1]]
  for step, rows in enumerate(batches, start=1):
    grad = rng.normal(size=(len(rows), 2)).astype(np.float32)
    opt.apply_gradients([(tf.IndexedSlices(
        tf.constant(grad), tf.constant(rows), tf.constant([6, 2])), table)])
    w, m, v = _numpy_lazy_adam(w, m, v, np.array(rows), grad, step, lr=lr)
    if step < 3:  # rows never in a batch are untouched between shrinks
      np.testing.assert_array_equal(table.numpy()[2:], w0[2:])
    if step == 3:
      w = _numpy_shrink(w, v / (1 - b2 ** 3), lr, l2, 3.0)
    np.testing.assert_allclose(table.numpy(), w, rtol=1e-5, atol=1e-7)
  # Rows 2-5 never had a gradient (v = 0): the shrink took them towards 0.
  assert np.all(np.abs(table.numpy()[2:]) < np.abs(w0[2:]))
  velocity = opt._velocities[0].numpy()  # pylint: disable=protected-access
  np.testing.assert_allclose(velocity, v, rtol=1e-4, atol=1e-12)


def test_row_l2_leaves_dense_variables_to_plain_adam():
  a, b = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0])
  opt = LazyAdam(0.1, row_l2=0.5, row_l2_every=1)
  for _ in range(3):
    opt.apply_gradients([(tf.constant([0.5, -1.0]), a)])
  adam = tf.keras.optimizers.Adam(0.1)
  for _ in range(3):
    adam.apply_gradients([(tf.constant([0.5, -1.0]), b)])
  np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_row_l2_options_round_trip_and_are_checked():
  opt = LazyAdam(0.01, row_l2=1e-3, row_l2_every=50)
  again = LazyAdam.from_config(opt.get_config())
  assert (again.row_l2, again.row_l2_every) == (1e-3, 50)
  with pytest.raises(ValueError, match="row_l2 must be >= 0"):
    LazyAdam(row_l2=-1.0)
  with pytest.raises(ValueError, match="row_l2_every must be >= 1"):
    LazyAdam(row_l2_every=0)
