"""Group (user-weighted) AUC, the main metric of the DIN paper."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf


def grouped_auc(user_ids: tf.Tensor, labels: tf.Tensor, scores: tf.Tensor
                ) -> tf.Tensor:
  """GAUC = sum_i n_i * AUC_i / sum_i n_i over users i with both classes.

  n_i is user i's number of impressions. AUC_i is the Mann-Whitney statistic
  with tied scores counted as one half, computed from average ranks within
  each user in O(n log n). Labels > 0.5 are positives. NaN if no user has
  both classes.

  Args:
    user_ids: [n] group keys (any dtype `tf.unique` accepts).
    labels: [n] 0/1 labels.
    scores: [n] predicted scores (any monotone transform gives the same GAUC).
  """
  user_ids = tf.reshape(user_ids, [-1])
  labels = tf.cast(tf.cast(tf.reshape(labels, [-1]), tf.float64) > 0.5,
                   tf.float64)
  scores = tf.cast(tf.reshape(scores, [-1]), tf.float64)
  groups, user = tf.unique(user_ids, out_idx=tf.int64)
  num_users = tf.size(groups, out_type=tf.int64)
  by_score = tf.argsort(scores, stable=True)
  order = tf.gather(by_score,
                    tf.argsort(tf.gather(user, by_score), stable=True))
  user, labels, scores = (tf.gather(t, order) for t in (user, labels, scores))

  ones = tf.ones_like(labels)
  counts = tf.math.unsorted_segment_sum(ones, user, num_users)
  starts = tf.math.cumsum(counts, exclusive=True)
  position = tf.cumsum(ones, exclusive=True) - tf.gather(starts, user)
  first = tf.ones_like(user[:1], dtype=tf.bool)  # empty when there is no data
  boundary = tf.concat([first, tf.logical_or(user[1:] != user[:-1],
                                              scores[1:] != scores[:-1])], 0)
  tie_group = tf.cumsum(tf.cast(boundary, tf.int64)) - 1
  rank = tf.gather(tf.math.segment_mean(position, tie_group), tie_group) + 1.0

  positives = tf.math.unsorted_segment_sum(labels, user, num_users)
  negatives = counts - positives
  rank_sum = tf.math.unsorted_segment_sum(rank * labels, user, num_users)
  auc = tf.math.divide_no_nan(rank_sum - positives * (positives + 1.0) / 2.0,
                              positives * negatives)
  weight = tf.where((positives > 0) & (negatives > 0), counts,
                    tf.zeros_like(counts))
  return tf.reduce_sum(weight * auc) / tf.reduce_sum(weight)


def gauc(user_ids, labels, scores) -> float:
  """NumPy-friendly `grouped_auc`: returns a Python float.

  Example:

  >>> gauc([1, 1, 2, 2, 2], [1, 0, 1, 0, 0], [0.9, 0.1, 0.2, 0.3, 0.1])
  0.7
  """
  return float(grouped_auc(tf.constant(np.asarray(user_ids)),
                           tf.constant(np.asarray(labels)),
                           tf.constant(np.asarray(scores))))


def _replicated() -> bool:
  return (tf.distribute.has_strategy() and
          tf.distribute.get_strategy().num_replicas_in_sync > 1)


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
class GAUC(tf.keras.metrics.Metric):
  """Streaming GAUC over every batch seen since the last reset.

  A user's impressions may span batches, so the metric keeps (user, label,
  score) triples (O(examples) memory, like any exact AUC over groups) in
  buffers whose capacity doubles when full, so an update costs amortised
  O(batch), and computes `grouped_auc` on them in `result`.

  Under a multi-replica strategy the buffers are replica-local (like every
  Keras metric variable) and `fit`'s logs show the first replica's share of
  the data; `tfrs_din.training.evaluate` computes the exact GAUC on the host.

  Args:
    name: metric name.

  Example:

  >>> metric = GAUC()
  >>> _ = metric.update_state([1, 1, 2], [1, 0, 1], [0.9, 0.1, 0.2])
  >>> _ = metric.update_state([2, 2], [0, 0], [0.3, 0.1])
  >>> round(float(metric.result()), 4)
  0.7
  """

  def __init__(self, name: str = "gauc", **kwargs):
    kwargs.pop("dtype", None)
    super().__init__(name=name, dtype=tf.float64, **kwargs)
    # Replica-local (ON_READ) like Keras' own metric variables: under a
    # multi-replica strategy each replica buffers its share of the batches.
    local = dict(trainable=False,
                 synchronization=tf.VariableSynchronization.ON_READ,
                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    spec = dict(shape=tf.TensorShape([None]), validate_shape=False, **local)
    with tf.init_scope():
      self._count = tf.Variable(0, dtype=tf.int32, name="count", **local)
      self._users = tf.Variable(tf.zeros([0], tf.int64), name="users", **spec)
      self._labels = tf.Variable(tf.zeros([0], tf.float32), name="labels",
                                 **spec)
      self._scores = tf.Variable(tf.zeros([0], tf.float32), name="scores",
                                 **spec)

  def _buffers(self):
    return (self._users, self._labels, self._scores)

  def update_state(self, user_ids: tf.Tensor, labels: tf.Tensor,
                   scores: tf.Tensor, sample_weight: Optional[tf.Tensor] = None):
    """Appends a batch; `sample_weight` is ignored (impressions weigh users)."""
    del sample_weight
    new = (tf.cast(tf.reshape(user_ids, [-1]), tf.int64),
           tf.cast(tf.reshape(labels, [-1]), tf.float32),
           tf.cast(tf.reshape(scores, [-1]), tf.float32))
    count = self._count.value()
    end = count + tf.shape(new[0])[0]
    capacity = tf.shape(self._users)[0]

    def grow():
      size = tf.maximum(2 * capacity, end)
      for buffer in self._buffers():
        kept = buffer.value()[:count]
        buffer.assign(tf.concat(
            [kept, tf.zeros([size - count], buffer.dtype)], 0))
      return tf.constant(True)

    grown = tf.cond(end > capacity, grow, lambda: tf.constant(False))
    with tf.control_dependencies([grown]):
      indices = tf.range(count, end)[:, tf.newaxis]
      if _replicated():
        # Replica-local variables support assign but not scatter: O(buffer).
        updates = [buffer.assign(tf.tensor_scatter_nd_update(
            buffer.value(), indices, values))
                   for buffer, values in zip(self._buffers(), new)]
      else:
        updates = [buffer.scatter_nd_update(indices, values)
                   for buffer, values in zip(self._buffers(), new)]
    with tf.control_dependencies(updates):
      return self._count.assign(end)

  def result(self) -> tf.Tensor:
    count = tf.convert_to_tensor(self._count)
    users, labels, scores = (tf.convert_to_tensor(b)[:count]
                             for b in self._buffers())
    return grouped_auc(users, labels, scores)

  def reset_state(self):
    self._count.assign(0)
    for buffer in self._buffers():
      buffer.assign(tf.zeros([0], buffer.dtype))
