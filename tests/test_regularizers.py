import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.regularizers import MiniBatchAwareL2


def test_penalty_and_gradient_follow_the_mba_rule():
  freq = np.array([0, 3, 1, 5, 2, 8], np.float32)
  table = tf.Variable(np.random.randn(6, 3).astype(np.float32))
  ids = tf.constant([[1, 3, 3], [1, 5, 0]])
  mba = MiniBatchAwareL2(freq, l2=0.01)
  with tf.GradientTape() as tape:
    penalty = mba(table, ids)
  grad = tape.gradient(penalty, table)
  assert isinstance(grad, tf.IndexedSlices)
  dense = tf.convert_to_tensor(grad).numpy()
  w = table.numpy()
  present = [0, 1, 3, 5]
  n = np.maximum(freq, 1.0)
  for j in range(6):
    expected = 0.01 * w[j] / n[j] if j in present else np.zeros(3)
    np.testing.assert_allclose(dense[j], expected, rtol=1e-5, atol=1e-8)
  expected_penalty = 0.5 * 0.01 * sum((w[j] ** 2).sum() / n[j] for j in present)
  np.testing.assert_allclose(float(penalty), expected_penalty, rtol=1e-5)


def test_work_is_proportional_to_unique_ids_not_vocabulary():
  """Counts the rows the penalty touches: its gradient holds only unique ids."""
  vocab = 2_000_000
  table = tf.Variable(tf.zeros([vocab, 2]))
  mba = MiniBatchAwareL2(vocab_size=vocab)
  ids = tf.constant(np.random.randint(0, vocab, size=(256, 50)))
  with tf.GradientTape() as tape:
    penalty = mba(table, ids)
  grad = tape.gradient(penalty, table)
  assert isinstance(grad, tf.IndexedSlices)
  assert grad.values.shape[0] == len(np.unique(ids.numpy()))
  assert grad.values.shape[0] <= 256 * 50


def test_needs_frequencies_or_size():
  with pytest.raises(ValueError, match="frequencies"):
    MiniBatchAwareL2()
