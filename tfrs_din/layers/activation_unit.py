"""DIN's local activation unit: attention pooling of behaviours by a candidate."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from tfrs_din.layers.dice import Dice
from tfrs_din.layers.mlp import MLP, make_activation

_NEG_INF = -1e9


def _project(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
  """x [..., D] @ kernel [D, H] as one 2-D matmul.

  A rank-3 `tf.matmul` against a rank-2 kernel is a broadcasting batch matmul
  whose kernel gradient materialises one [D, H] matrix per batch row before
  summing them; flattening the leading axes avoids that.
  """
  flat = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), kernel)
  return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], [kernel.shape[-1]]], 0))


class LocalActivationUnit(tf.keras.layers.Layer):
  """Pools behaviour embeddings with weights that depend on the candidate.

      w_j  = a([q, k_j, q - k_j, q * k_j])        (a: feed-forward net, 1 output)
      v_U  = sum_j mask_j * w_j * k_j

  No softmax by default, so sum_j w_j keeps the intensity of the interest;
  `normalization="softmax"` sets padded scores to -inf before a softmax over
  the valid positions. Padded positions always get exactly zero weight.

  Only the valid (row, behaviour) pairs are scored, so the cost follows the
  real history lengths, not the padded length. The first dense layer is
  evaluated in its split form
  W [q, k, q-k, q*k] = (W1 + W3) q + (W2 - W3) k + W4 (q * k): the query
  and key parts are computed once each, not once per (query, key) pair. The
  query may be [B, D] (one candidate per row) or [B, N, D] (N candidates
  scored against the same behaviours, as in serving).

  Args:
    hidden_units: hidden sizes of the scoring net, e.g. (80, 40).
    activation: "dice", "prelu", "sigmoid", ... (see `make_activation`).
    normalization: None or "softmax".

  Call args:
    query: [B, D] or [B, N, D] candidate embeddings.
    keys: [B, L, D] behaviour embeddings.
    mask: [B, L] boolean, True at valid (not padded) positions.
    return_weights: also return the weights, [B, L] or [B, N, L].

  Example:

  >>> lau = LocalActivationUnit((8, 4), activation="prelu")
  >>> pooled, w = lau(tf.ones([2, 3]), tf.ones([2, 5, 3]),
  ...                 mask=tf.sequence_mask([2, 5], 5), return_weights=True)
  >>> pooled.shape, w.shape
  (TensorShape([2, 3]), TensorShape([2, 5]))
  """

  def __init__(self, hidden_units: Sequence[int] = (80, 40),
               activation: Optional[str] = "dice",
               normalization: Optional[str] = None, **kwargs):
    super().__init__(**kwargs)
    if normalization not in (None, "softmax"):
      raise ValueError(
          f"normalization must be None or 'softmax', got {normalization!r}.")
    if not hidden_units:
      raise ValueError("hidden_units must name at least one hidden layer.")
    self.hidden_units = tuple(int(u) for u in hidden_units)
    self.activation = activation
    self.normalization = normalization
    self._first_activation = make_activation(activation, "act_0")
    self._rest = MLP(self.hidden_units[1:], activation=activation,
                     output_units=1, name="score")

  def build(self, input_shape):
    dim = int(input_shape[-1])
    self.first_kernel = self.add_weight(
        name="first_kernel", shape=(4 * dim, self.hidden_units[0]),
        initializer="glorot_uniform")
    self.first_bias = self.add_weight(
        name="first_bias", shape=(self.hidden_units[0],), initializer="zeros")
    super().build(input_shape)

  def call(self, query: tf.Tensor, keys: tf.Tensor,
           mask: Optional[tf.Tensor] = None, return_weights: bool = False,
           training: Optional[bool] = None):
    single = query.shape.rank == 2
    q = query[:, tf.newaxis, :] if single else query          # [B, N, D]
    if mask is None:
      mask = tf.ones(tf.shape(keys)[:2], dtype=tf.bool)
    mask = tf.cast(mask, tf.bool)
    weights = self.scores(q, keys, mask, training=training)   # [B, N, L]
    weights = self._normalize(weights, mask)
    pooled = tf.matmul(weights, keys)                          # [B, N, D]
    if single:
      pooled, weights = pooled[:, 0], weights[:, 0]
    return (pooled, weights) if return_weights else pooled

  def scores(self, q: tf.Tensor, keys: tf.Tensor, mask: tf.Tensor,
             training: Optional[bool] = None) -> tf.Tensor:
    """Raw scores a(q, k_j) for q [B, N, D], keys [B, L, D] -> [B, N, L].

    Only valid (b, j) positions are scored: they are gathered, scored and
    scattered back, so the work follows the real history lengths rather than
    the padded length, and padded positions score exactly 0.
    """
    w_q, w_k, w_diff, w_prod = tf.split(self.first_kernel, 4, axis=0)
    positions = tf.where(mask)                                  # [P, 2]: (b, j)
    rows = positions[:, 0]
    valid_keys = tf.gather_nd(keys, positions)                  # [P, D]
    query_part = _project(q, w_q + w_diff) + self.first_bias    # [B, N, H]
    key_part = tf.matmul(valid_keys, w_k - w_diff)              # [P, H]
    pair_q = tf.gather(q, rows)                                 # [P, N, D]
    prod_part = _project(pair_q * valid_keys[:, tf.newaxis], w_prod)
    hidden = (prod_part + tf.gather(query_part, rows)
              + key_part[:, tf.newaxis])                        # [P, N, H]
    if isinstance(self._first_activation, Dice):
      hidden = self._first_activation(hidden, training=training)
    else:
      hidden = self._first_activation(hidden)
    scores = tf.squeeze(self._rest(hidden, training=training), -1)  # [P, N]
    shape = tf.stack([tf.shape(keys)[0], tf.shape(keys)[1], tf.shape(q)[1]])
    dense = tf.scatter_nd(positions, scores, tf.cast(shape, tf.int64))
    return tf.transpose(dense, [0, 2, 1])                       # [B, N, L]

  def _normalize(self, scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    mask = tf.broadcast_to(mask[:, tf.newaxis, :], tf.shape(scores))
    maskf = tf.cast(mask, scores.dtype)
    if self.normalization == "softmax":
      scores = tf.nn.softmax(tf.where(mask, scores, _NEG_INF), axis=-1)
    return scores * maskf  # exact zeros at padding, also for empty rows

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(hidden_units=self.hidden_units, activation=self.activation,
                  normalization=self.normalization)
    return config
