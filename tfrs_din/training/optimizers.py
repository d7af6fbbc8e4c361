"""Sparse-aware ("lazy") Adam for large embedding tables."""

from __future__ import annotations

import tensorflow as tf


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
class LazyAdam(tf.keras.optimizers.Adam):
  """Adam that updates only the embedding rows present in a sparse gradient.

  For an `IndexedSlices` gradient g over rows J (duplicates summed):

      m_J <- beta_1 m_J + (1 - beta_1) g_J
      v_J <- beta_2 v_J + (1 - beta_2) g_J^2
      w_J <- w_J - lr_t m_J / (sqrt(v_J) + eps)

  and rows outside J, with their moments, are left untouched. Keras' Adam
  decays m and v and rewrites every row of the table each step, which costs
  O(vocabulary); this costs O(rows in the batch). Dense gradients get plain
  Adam. (Rows that are absent for a while keep stale moments: the usual
  trade-off of lazy Adam, as in TF-Addons and PyTorch's SparseAdam.)

  Args: those of `tf.keras.optimizers.Adam` (amsgrad is not supported).

  Example:

  >>> opt = LazyAdam(learning_rate=0.01)
  >>> table = tf.Variable(tf.ones([4, 2]))
  >>> grad = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([2]), tf.constant([4, 2]))
  >>> _ = opt.apply_gradients([(grad, table)])
  >>> [round(float(v), 3) for v in table.numpy()[[0, 2], 0]]
  [1.0, 0.99]
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if self.amsgrad:
      raise ValueError("LazyAdam does not support amsgrad.")

  def update_step(self, gradient, variable):
    if not isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    beta_1_power = tf.pow(beta_1, step)
    beta_2_power = tf.pow(beta_2, step)
    alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - beta_2_power)
             / (1 - beta_1_power))
    epsilon = (self.epsilon * tf.sqrt(1 - beta_2_power)
               if self.adaptive_epsilon else self.epsilon)
    key = self._var_key(variable)
    m = self._momentums[self._index_dict[key]]
    v = self._velocities[self._index_dict[key]]

    rows, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position,
                                          tf.shape(rows)[0])
    m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
    v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
    m.scatter_update(tf.IndexedSlices(m_rows, rows))
    v.scatter_update(tf.IndexedSlices(v_rows, rows))
    variable.scatter_sub(tf.IndexedSlices(
        alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))
