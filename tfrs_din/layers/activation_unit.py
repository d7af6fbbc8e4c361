"""DIN's local activation unit: attention pooling of behaviours by a candidate."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import tensorflow as tf

from tfrs_din.layers.arrays import accepts_arrays
from tfrs_din.layers.dice import Dice
from tfrs_din.layers.mlp import (MLP, activate_for_inference, dense_product,
                                 make_activation)



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

      w_j  = a([q, k_j, q - k_j, q * k_j])   (a: feed-forward net, 1 output)
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
               bias_initializer: Any = "zeros", **kwargs):
    super().__init__(**kwargs)
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
    scores = self.pair_scores(q, valid_keys, rows,
                              training=training)                # [P, N]
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
                  training: Optional[bool] = None) -> tf.Tensor:
    """Raw scores a(q_b, k_p) [P, N] of q [B, N, D] and keys [P, D] of rows b.

    Only valid behaviours are scored, so the work follows the real history
    lengths, not the padded length.
    """
    query_kernel, key_kernel, product_kernel = self.first_layer_split()
    query_part = dense_product(q, query_kernel) + self.first_bias  # [B, N, H]
    key_part = tf.matmul(valid_keys, key_kernel)                # [P, H]
    pair_q = tf.gather(q, rows)                                 # [P, N, D]
    prod_part = dense_product(pair_q * tf.expand_dims(valid_keys, 1),
                              product_kernel)
    hidden = (prod_part + tf.gather(query_part, rows)
              + tf.expand_dims(key_part, 1))                    # [P, N, H]
    if isinstance(self._first_activation, Dice):
      hidden = self._first_activation(hidden, training=training)
      scores = self._rest(hidden, training=training)
    else:
      scores = self._rest(self._first_activation(hidden), training=training)
    return tf.squeeze(scores, -1)

  def first_layer_split(self) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The first dense layer regrouped by input: (W_q, W_k, W_p), each [D, H].

    With the kernel's four row blocks W = [W1; W2; W3; W4] over
    [q, k, q - k, q * k]: W_q = W1 + W3, W_k = W2 - W3, W_p = W4, so that
    [q, k, q - k, q * k] W = q W_q + k W_k + (q * k) W_p (plus `first_bias`).
    """
    w_q, w_k, w_diff, w_prod = tf.split(self.first_kernel, 4, axis=0)
    return w_q + w_diff, w_k - w_diff, w_prod

  def inference_scores(self, query: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
    """Raw scores a(q_n, k_l) [B, N, L] of every query against every key
    of its row, in inference mode (before masking and normalisation).

    Per key, the first layer is one (D + 1) x H matrix,
    A_k = [W_q + diag(k) W_p ; k W_k + b] (`first_layer_split`), so that its
    pre-activation for query q is [q ; 1] A_k: every (query, key) pair of a
    row is one [N, D + 1] x [D + 1, L * H] matrix product, with no [pairs, D]
    product or [pairs, 4D] concatenation materialised. The rest of the net
    runs as `MLP.inference_layers`. Padded keys are scored too: the caller
    masks them.

    Args:
      query: [B, N, D] queries (candidates).
      keys: [B, L, D] keys (behaviours).
    """
    dim = int(query.shape[-1])
    units = self.hidden_units[0]
    query_kernel, key_kernel, product_kernel = self.first_layer_split()
    # A [B, D + 1, L, H]: rows d < D are (W_q + diag(k) W_p)[d], row D the
    # key part and bias of each key.
    keys_t = tf.transpose(keys, [0, 2, 1])                      # [B, D, L]
    rows = (keys_t[:, :, :, tf.newaxis]
            * product_kernel[tf.newaxis, :, tf.newaxis]
            + query_kernel[tf.newaxis, :, tf.newaxis])          # [B, D, L, H]
    last = (dense_product(keys, key_kernel) + self.first_bias)[:, tf.newaxis]
    batch, width = tf.shape(keys)[0], tf.shape(keys)[1]
    matrices = tf.reshape(tf.concat([rows, last], 1),
                          [batch, dim + 1, width * units])
    ones = tf.ones(tf.concat([tf.shape(query)[:-1], [1]], 0), query.dtype)
    z = tf.matmul(tf.concat([query, ones], -1), matrices)       # [B, N, L*H]
    z = tf.reshape(z, [batch, tf.shape(query)[1], width, units])
    hidden = activate_for_inference(self._first_activation, z)
    for layer in self._rest.inference_layers():
      hidden = layer(hidden)
    return tf.squeeze(hidden, -1)

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(hidden_units=self.hidden_units, activation=self.activation,
                  normalization=self.normalization,
                  kernel_initializer=tf.keras.initializers.serialize(
                      self.kernel_initializer),
                  bias_initializer=tf.keras.initializers.serialize(
                      self.bias_initializer))
    return config
