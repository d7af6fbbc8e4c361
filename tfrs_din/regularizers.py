"""Penalties on embedding tables: DIN's mini-batch aware L2 (section 4.1),
and the choice between it, the dense L2 and the dense L2's lazy form."""

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
  as the number of samples in which id j occurs; the models pass the
  vocabulary counts, the number of events of the log holding id j, which
  `prepare` writes (under the next-item protocol, smaller than the sample
  counts for item ids, since a behaviour occurs in many later samples).

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


# Values of the models' `regularization` argument.
REGULARIZATIONS = ("auto", "l2", "lazy_l2", "mba", None)
# lambda of each regulariser when none is given: the dense L2 and its lazy
# form were chosen on validation users (docs/design.md); MBA's is the DIN
# paper's.
DEFAULT_L2 = {"l2": 1e-3, "lazy_l2": 1e-3, "mba": 0.01}
# "auto" is the dense L2 up to this many embedding rows in all and its lazy
# form above: the dense L2's step cost grows with the rows, the lazy form's
# does not (docs/benchmarks.md, "vocabulary").
DENSE_L2_MAX_ROWS = 250_000


def resolve_regularization(regularization: Optional[str],
                           embedding_rows: int) -> Optional[str]:
  """The regulariser a model trains with: `regularization` itself, where
  "auto" is the dense "l2" for tables of at most `DENSE_L2_MAX_ROWS` rows in
  all and "lazy_l2" (applied by `tfrs_din.optimizers.LazyAdam`) above.

  >>> resolve_regularization("auto", 20_000), resolve_regularization("auto", 10**7)
  ('l2', 'lazy_l2')
  """
  if regularization not in REGULARIZATIONS:
    raise ValueError(f"regularization must be one of {REGULARIZATIONS}, got "
                     f"{regularization!r}.")
  if regularization != "auto":
    return regularization
  return "lazy_l2" if embedding_rows > DENSE_L2_MAX_ROWS else "l2"


def default_l2(regularization: Optional[str]) -> float:
  """lambda of a resolved regulariser when none is given (0 without one)."""
  return DEFAULT_L2.get(regularization, 0.0)
