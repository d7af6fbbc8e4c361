import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.training.optimizers import LazyAdam


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
