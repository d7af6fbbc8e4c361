"""DIN's local activation unit: attention pooling of behaviours by a candidate."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import tensorflow as tf

from tfrs_din.layers.arrays import accepts_arrays
from tfrs_din.layers.dice import Dice
from tfrs_din.layers.mlp import MLP, make_activation

def _project(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
  """x [..., D] @ kernel [D, H] as one 2-D matmul.

  A rank-3 `tf.matmul` against a rank-2 kernel is a broadcasting batch matmul
  whose kernel gradient materialises one [D, H] matrix per batch row before
  summing them; flattening the leading axes avoids that.
  """
  flat = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), kernel)
  return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], [kernel.shape[-1]]], 0))


def _segment_softmax(scores: tf.Tensor, rows: tf.Tensor,
                     batch: tf.Tensor) -> tf.Tensor:
  """Softmax of [P, N] scores over the pairs of each row (P indexed by rows)."""
  peak = tf.math.unsorted_segment_max(scores, rows, batch)
  exp = tf.exp(scores - tf.stop_gradient(tf.gather(peak, rows)))
  return exp / tf.gather(tf.math.unsorted_segment_sum(exp, rows, batch), rows)


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays
class LocalActivationUnit(tf.keras.layers.Layer):
  """Pools behaviour embeddings with weights that depend on the candidate.

      w_j  = w0 + a([q, k_j, q - k_j, q * k_j])   (a: feed-forward net, 1 output)
      v_U  = sum_j mask_j * w_j * k_j

  No softmax by default, so sum_j w_j keeps the intensity of the interest;
  `normalization="softmax"` normalises over the valid positions only.
  Padded positions always get exactly zero weight.

  Only the valid (row, behaviour) pairs are scored, so the cost follows the
  real history lengths, not the padded length. The first dense layer is
  evaluated in its split form
  W [q, k, q-k, q*k] = (W1 + W3) q + (W2 - W3) k + W4 (q * k): the query
  and key parts are computed once each, not once per (query, key) pair. The
  query may be [B, D] (one candidate per row) or [B, N, D] (N candidates
  scored against the same behaviours, as in serving).

  References: DIN, arXiv:1706.06978, eq. 3 (and Fig. 2, activation unit).

  Input: query [B, D] or [B, N, D]; keys [B, L, D] (or ragged [B, (L), D]);
  mask [B, L]. Output: pooled [B, D] (or [B, N, D]); with `return_weights`
  also the weights [B, L] (or [B, N, L]).

  Args:
    hidden_units: hidden sizes of the scoring net, e.g. (80, 40).
    activation: "dice", "prelu", "sigmoid", ... (see `make_activation`).
    normalization: None or "softmax".
    kernel_initializer: initializer of the scoring net's dense kernels.
    bias_initializer: initializer of its dense biases.
    padded_statistics: in training, Dice's batch statistics also count the
      padded positions up to the batch's longest history, with a zero
      behaviour (k = 0, so the first layer gives (W1 + W3) q + b), as
      FuxiCTR and DeepCTR-Torch compute them by scoring every position.
      Scores, pooling and inference are unchanged; the statistics then
      depend on how much padding a batch holds. Default False: only valid
      behaviours count (measured in docs/results.md).
    initial_weight: w0, a constant added to every score (the same as
      starting the net's output bias at w0). 0 (default): the paper's w = a.
      1: the weights start near 1, so the pooling starts as the base
      model's sum pooling and the net learns how far to move from it. It
      changes nothing under softmax.

  Call args:
    query: [B, D] or [B, N, D] candidate embeddings.
    keys: [B, L, D] behaviour embeddings, or a `tf.RaggedTensor`
      [B, (L), D] holding only the valid behaviours (then no mask; this
      skips gathering them out of a padded tensor).
    mask: [B, L] boolean, True at valid (not padded) positions.
    return_weights: also return the weights, [B, L] or [B, N, L] (L: the
      longest row for ragged keys).

  Example:

  >>> lau = LocalActivationUnit((8, 4), activation="prelu")
  >>> pooled, w = lau(tf.ones([2, 3]), tf.ones([2, 5, 3]),
  ...                 mask=tf.sequence_mask([2, 5], 5), return_weights=True)
  >>> pooled.shape, w.shape
  (TensorShape([2, 3]), TensorShape([2, 5]))
  """

  def __init__(self, hidden_units: Sequence[int] = (80, 40),
               activation: Optional[str] = "dice",
               normalization: Optional[str] = None,
               kernel_initializer: Any = "glorot_uniform",
               bias_initializer: Any = "zeros",
               padded_statistics: bool = False, initial_weight: float = 0.0,
               **kwargs):
    super().__init__(**kwargs)
    self.padded_statistics = bool(padded_statistics)
    self.initial_weight = float(initial_weight)
    if normalization not in (None, "softmax"):
      raise ValueError(
          f"normalization must be None or 'softmax', got {normalization!r}.")
    if not hidden_units:
      raise ValueError("hidden_units must name at least one hidden layer.")
    self.hidden_units = tuple(int(u) for u in hidden_units)
    self.activation = activation
    self.normalization = normalization
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
    self.bias_initializer = tf.keras.initializers.get(bias_initializer)
    self._first_activation = make_activation(activation, "act_0")
    self._rest = MLP(self.hidden_units[1:], activation=activation,
                     output_units=1,
                     kernel_initializer=tf.keras.initializers.serialize(
                         self.kernel_initializer),
                     bias_initializer=tf.keras.initializers.serialize(
                         self.bias_initializer), name="score")

  def build(self, input_shape):
    dim = int(input_shape[-1])
    self.first_kernel = self.add_weight(
        name="first_kernel", shape=(4 * dim, self.hidden_units[0]),
        initializer=self.kernel_initializer)
    self.first_bias = self.add_weight(
        name="first_bias", shape=(self.hidden_units[0],),
        initializer=self.bias_initializer)
    super().build(input_shape)

  def call(self, query: tf.Tensor, keys, mask: Optional[tf.Tensor] = None,
           return_weights: bool = False, training: Optional[bool] = None):
    single = query.shape.rank == 2
    q = tf.expand_dims(query, 1) if single else query           # [B, N, D]
    if isinstance(keys, tf.RaggedTensor):
      if mask is not None:
        raise ValueError("mask must be None when keys is a RaggedTensor: its "
                         "rows already hold only the valid behaviours.")
      valid_keys, rows = keys.values, keys.value_rowids()
      columns = (tf.range(tf.shape(rows, out_type=tf.int64)[0])
                 - tf.gather(keys.row_starts(), rows))
      positions = tf.stack([rows, columns], axis=1)
      batch, width = keys.nrows(), keys.bounding_shape(axis=1)
    else:
      if mask is None:
        mask = tf.ones(tf.shape(keys)[:2], dtype=tf.bool)
      positions = tf.where(tf.cast(mask, tf.bool))             # [P, 2]: (b, j)
      rows = positions[:, 0]
      valid_keys = tf.gather_nd(keys, positions)               # [P, D]
      batch = tf.shape(keys, out_type=tf.int64)[0]
      width = tf.shape(keys, out_type=tf.int64)[1]
    padding = None
    if self.padded_statistics and training:   # [B]: padded positions per row
      lengths = tf.math.bincount(rows, minlength=batch, maxlength=batch,
                                 dtype=tf.float32)
      padding = tf.reduce_max(lengths) - lengths
    scores = self.pair_scores(q, valid_keys, rows, training=training,
                              padding=padding)                  # [P, N]
    if self.normalization == "softmax":
      scores = _segment_softmax(scores, rows, batch)
    pooled = tf.math.unsorted_segment_sum(                     # [B, N, D]
        tf.expand_dims(scores, 2) * tf.expand_dims(valid_keys, 1), rows,
        batch)
    if not return_weights:
      return tf.squeeze(pooled, 1) if single else pooled
    shape = tf.stack([batch, width, tf.shape(q, out_type=tf.int64)[1]])
    weights = tf.transpose(tf.scatter_nd(positions, scores, shape), [0, 2, 1])
    if single:
      pooled, weights = tf.squeeze(pooled, 1), tf.squeeze(weights, 1)
    return pooled, weights

  def pair_scores(self, q: tf.Tensor, valid_keys: tf.Tensor, rows: tf.Tensor,
                  training: Optional[bool] = None,
                  padding: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Raw scores w0 + a(q_b, k_p) [P, N] of q [B, N, D] and keys [P, D] of
    rows b.

    Only valid behaviours are scored, so the work follows the real history
    lengths, not the padded length. `padding` [B] (`padded_statistics`): row
    b's padded pairs all have the hidden value (W1 + W3) q_b + b, so one
    such pair per row, weighted by its count, enters Dice's statistics.
    """
    w_q, w_k, w_diff, w_prod = tf.split(self.first_kernel, 4, axis=0)
    query_part = _project(q, w_q + w_diff) + self.first_bias    # [B, N, H]
    key_part = tf.matmul(valid_keys, w_k - w_diff)              # [P, H]
    pair_q = tf.gather(q, rows)                                 # [P, N, D]
    prod_part = _project(pair_q * tf.expand_dims(valid_keys, 1), w_prod)
    hidden = (prod_part + tf.gather(query_part, rows)
              + tf.expand_dims(key_part, 1))                    # [P, N, H]
    if padding is not None:
      pairs = tf.shape(hidden)[0]
      hidden = tf.concat([hidden, query_part], 0)               # [P + B, N, H]
      counts = tf.concat([tf.ones([pairs]), padding], 0)[:, tf.newaxis]
      counts = counts * tf.ones_like(hidden[:, :, 0])           # [P + B, N]
      hidden = self._first_activation(hidden, training=training, mask=counts)
      scores = self._rest(hidden, training=training, mask=counts)[:pairs]
    elif isinstance(self._first_activation, Dice):
      hidden = self._first_activation(hidden, training=training)
      scores = self._rest(hidden, training=training)
    else:
      scores = self._rest(self._first_activation(hidden), training=training)
    return tf.squeeze(scores, -1) + self.initial_weight

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(hidden_units=self.hidden_units, activation=self.activation,
                  normalization=self.normalization,
                  padded_statistics=self.padded_statistics,
                  initial_weight=self.initial_weight,
                  kernel_initializer=tf.keras.initializers.serialize(
                      self.kernel_initializer),
                  bias_initializer=tf.keras.initializers.serialize(
                      self.bias_initializer))
    return config
