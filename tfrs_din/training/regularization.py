"""Mini-batch aware L2 regularisation of embedding tables (DIN, section 4.1)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfrs_din.layers.arrays import accepts_arrays


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays
class MiniBatchAwareL2(tf.keras.layers.Layer):
  """L2 on the embedding rows present in the mini-batch, scaled by 1/n_j.

      penalty = (lambda / 2) * sum_{j in unique(ids)} ||w_j||^2 / n_j
      d penalty / d w_j = lambda * w_j / n_j  if j occurs in the batch, else 0

  which is the update rule of DIN's eq. 4 with alpha_mj the indicator of id j
  in mini-batch m. Only the unique ids of the batch are gathered, so the cost
  and the gradient (an `IndexedSlices` over those rows) are O(unique ids in the
  batch), independent of the vocabulary size. Ids with n_j = 0 (padding, OOV
  or unseen) are treated as n_j = 1.

  What n_j counts is the caller's choice: DIN's paper (section 4.1) defines it
  as the number of samples in which id j occurs
  (`tfrs_din.data.sample_counts.count_samples`, `mba_counts="samples"` in
  `tfrs_din.training.TrainConfig`); the default of `train` is the vocabulary
  counts, the number of events of the log holding id j (`mba_counts=
  "events"`), which under the next-item protocol is smaller for item ids (a
  behaviour occurs in up to `max_history` later samples; about 11x at the
  median item of Amazon Toys with max_history 50).

  Args:
    frequencies: n_j for each row of the table, shape [vocab_size]; None means
      n_j = 1 for every row (plain L2 restricted to the batch's rows).
    l2: lambda (0.01 in the paper).
    vocab_size: required when `frequencies` is None.

  Example:

  >>> table = tf.Variable(tf.ones([5, 2]))
  >>> mba = MiniBatchAwareL2(frequencies=[1, 2, 2, 4, 1], l2=0.1)
  >>> round(float(mba(table, tf.constant([[1, 1], [3, 0]]))), 4)  # rows 0, 1, 3
  0.175
  """

  def __init__(self, frequencies: Optional[Union[Sequence[float], np.ndarray]] = None,
               l2: float = 0.01, vocab_size: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    if frequencies is None and vocab_size is None:
      raise ValueError("MiniBatchAwareL2 needs `frequencies` or `vocab_size`.")
    self.l2 = float(l2)
    if frequencies is not None:
      freq = np.maximum(np.asarray(frequencies, dtype=np.float32), 1.0)
      if freq.ndim != 1:
        raise ValueError(
            f"frequencies must be one-dimensional, got shape {freq.shape}.")
      self.vocab_size = int(freq.shape[0])
      init = tf.constant_initializer(1.0 / freq)
    else:
      self.vocab_size = int(vocab_size)
      init = "ones"
    self.inverse_frequency = self.add_weight(
        name="inverse_frequency", shape=(self.vocab_size,), initializer=init,
        trainable=False)

  def call(self, table: tf.Variable, ids: tf.Tensor) -> tf.Tensor:
    unique_ids, _ = tf.unique(tf.reshape(tf.cast(ids, tf.int64), [-1]))
    rows = tf.nn.embedding_lookup(table, unique_ids)  # also sharded tables
    scale = tf.gather(self.inverse_frequency, unique_ids)
    return 0.5 * self.l2 * tf.reduce_sum(
        scale * tf.reduce_sum(tf.square(rows), axis=-1))

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(l2=self.l2, vocab_size=self.vocab_size)
    return config
