import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.regularizers import (DEFAULT_L2, DENSE_L2_MAX_ROWS, REGULARIZATIONS,
                                   MiniBatchAwareL2, default_l2,
                                   resolve_regularization)


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


@pytest.mark.parametrize("rows, expected", [
    (0, "l2"), (DENSE_L2_MAX_ROWS, "l2"), (DENSE_L2_MAX_ROWS + 1, "lazy_l2"),
    (10 ** 8, "lazy_l2")])
def test_auto_is_the_dense_l2_up_to_the_row_limit(rows, expected):
  assert DENSE_L2_MAX_ROWS == 250_000
  assert resolve_regularization("auto", rows) == expected


@pytest.mark.parametrize("explicit", ["l2", "lazy_l2", "mba", None])
def test_an_explicit_regulariser_is_kept_whatever_the_size(explicit):
  for rows in (10, 10 ** 8):
    assert resolve_regularization(explicit, rows) == explicit


def test_an_unknown_regulariser_is_refused():
  with pytest.raises(ValueError, match=r"regularization must be one of "
                     r"\('auto', 'l2', 'lazy_l2', 'mba', None\), got 'l1'"):
    resolve_regularization("l1", 10)


def test_each_regulariser_has_its_default_lambda():
  assert [default_l2(r) for r in ("l2", "lazy_l2", "mba", None)] == [
      1e-3, 1e-3, 0.01, 0.0]
  assert set(DEFAULT_L2) | {"auto", None} == set(REGULARIZATIONS)
