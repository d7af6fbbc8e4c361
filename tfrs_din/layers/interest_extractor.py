"""DIEN's interest extractor: a GRU over behaviours with an auxiliary loss."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import tensorflow as tf

from tfrs_din.layers.arrays import accepts_arrays, to_tensors
from tfrs_din.layers.attention_gru import AttentionGRUCell, masked_scan
from tfrs_din.layers.mlp import MLP

# Values of `InterestExtractor(aux_reduction=...)`.
AUX_REDUCTIONS = ("padded_mean", "step_mean")


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays
class InterestExtractor(tf.keras.layers.Layer):
  """GRU interest states h_1..h_T and their next-behaviour auxiliary loss.

      h_t = GRU(e_t, h_{t-1})          (padded steps keep h_{t-1})
      L_aux = (1/|V|) sum_{(b,t) in V} [ -log s(h_t, e_{t+1}) - log(1 - s(h_t, e'_{t+1})) ]
      s(h, e) = sigmoid(net([h ; e])),  net = BN -> 100 -> 50 -> 1 (sigmoid hidden)

  V holds the steps t whose behaviour t and next behaviour t+1 are both valid.
  The sum over V is divided by B * (T - 1) ("padded_mean", the default), as
  the official code (script/model.py, `auxiliary_loss`) averages over every
  position of a batch padded to T steps, or by |V|, a mean over the valid
  steps ("step_mean"). T is `max_steps` when given, a constant, so that the
  loss does not depend on how batches are grouped or padded (a batch of
  short histories padded to its own length would weigh its steps more);
  else the longest history in the batch. e' are sampled negatives given as
  input, aligned with the behaviours (negatives[:, t] is the negative for
  behaviour t).

  References: DIEN, arXiv:1809.03672, eq. 1-4 (GRU, see
  `tfrs_din.layers.gru_equations`) and eq. 5 (auxiliary loss).

  Input: behaviours [B, T, D], mask [B, T]. Output: states [B, T, units]
  (zeros at padded steps); `auxiliary_loss` gives a scalar.

  Args:
    units: size of the interest state (36 in the official DIEN code).
    aux_hidden_units: hidden sizes of the auxiliary net.
    aux_activation: activation of the auxiliary net's hidden layers.
    aux_reduction: "padded_mean" or "step_mean" (see above).
    max_steps: T of "padded_mean": the longest history the data can hold
      (`DIENModel` passes its spec's `max_history`); None: each batch's
      longest history.
    kernel_initializer, recurrent_initializer, bias_initializer: those of the
      GRU cell (see `AttentionGRUCell`).

  Example:

  >>> extractor = InterestExtractor(4)
  >>> states = extractor(tf.ones([2, 5, 3]), mask=tf.sequence_mask([2, 5], 5))
  >>> states.shape
  TensorShape([2, 5, 4])
  """

  def __init__(self, units: int = 36,
               aux_hidden_units: Sequence[int] = (100, 50),
               aux_activation: str = "sigmoid",
               aux_reduction: str = "padded_mean",
               max_steps: Optional[int] = None,
               kernel_initializer: Any = "glorot_uniform",
               recurrent_initializer: Any = "orthogonal",
               bias_initializer: Any = "zeros", **kwargs):
    super().__init__(**kwargs)
    if aux_reduction not in AUX_REDUCTIONS:
      raise ValueError(f"aux_reduction must be one of {AUX_REDUCTIONS}, got "
                       f"{aux_reduction!r}.")
    self.aux_reduction = aux_reduction
    if max_steps is not None and int(max_steps) < 1:
      raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
    self.max_steps = None if max_steps is None else int(max_steps)
    self.units = int(units)
    self.aux_hidden_units = tuple(int(u) for u in aux_hidden_units)
    self.aux_activation = aux_activation
    self.cell = AttentionGRUCell(
        units, gate="none", kernel_initializer=kernel_initializer,
        recurrent_initializer=recurrent_initializer,
        bias_initializer=bias_initializer, name="gru")
    self._aux_norm = tf.keras.layers.BatchNormalization(name="aux_bn")
    self._aux_net = MLP(self.aux_hidden_units, activation=aux_activation,
                        output_units=1, name="aux_net")

  def call(self, behaviours: tf.Tensor, mask: tf.Tensor,
           training: Optional[bool] = None) -> tf.Tensor:
    """Returns the states [B, T, H]; states at padded steps are zero."""
    states, _ = masked_scan(self.cell, behaviours, mask)
    return states * tf.expand_dims(tf.cast(mask, states.dtype), -1)

  def auxiliary_loss(self, states: tf.Tensor, behaviours: tf.Tensor,
                     negatives: tf.Tensor, mask: tf.Tensor,
                     training: Optional[bool] = None) -> tf.Tensor:
    """Next-behaviour log loss, normalised by `aux_reduction` (0 without steps).

    Args:
      states: [B, T, H] from `call`.
      behaviours: [B, T, D] behaviour embeddings (the positives, shifted).
      negatives: [B, T, D] embeddings of the sampled negatives.
      mask: [B, T] boolean, True at valid steps.
    """
    states, behaviours, negatives = (  # NumPy arrays and lists too
        tf.cast(to_tensors(t), self.compute_dtype)
        for t in (states, behaviours, negatives))
    mask = tf.cast(mask, tf.bool)
    # (b, t) of every step t whose next step is valid too. Gathering by index
    # (rather than slicing [:, 1:] and boolean_mask) keeps the backward pass
    # to one scatter per input.
    steps = tf.where(tf.logical_and(mask[:, :-1], mask[:, 1:]))
    next_steps = steps + tf.constant([0, 1], dtype=steps.dtype)
    h = tf.gather_nd(states, steps)
    positives = tf.gather_nd(behaviours, next_steps)
    negatives = tf.gather_nd(negatives, next_steps)
    pairs = tf.concat([tf.concat([h, positives], -1),
                       tf.concat([h, negatives], -1)], axis=0)
    logits = tf.squeeze(
        self._aux_net(self._aux_norm(pairs, training=training),
                      training=training), -1)
    pos_logits, neg_logits = tf.split(logits, 2)
    per_step = tf.nn.softplus(-pos_logits) + tf.nn.softplus(neg_logits)
    if self.aux_reduction == "step_mean":
      count = tf.shape(per_step)[0]
    elif self.max_steps is not None:   # "padded_mean": B * (T - 1)
      count = tf.shape(mask)[0] * (self.max_steps - 1)
    else:   # "padded_mean", T the batch's longest history
      longest = tf.reduce_max(
          tf.concat([tf.reduce_sum(tf.cast(mask, tf.int32), 1), [1]], 0))
      count = tf.shape(mask)[0] * (longest - 1)
    return tf.math.divide_no_nan(tf.reduce_sum(per_step),
                                 tf.cast(count, per_step.dtype))

  def get_config(self) -> dict:
    config = super().get_config()
    cell = self.cell.get_config()
    config.update(units=self.units, aux_hidden_units=self.aux_hidden_units,
                  aux_activation=self.aux_activation,
                  aux_reduction=self.aux_reduction, max_steps=self.max_steps,
                  **{k: cell[k] for k in ("kernel_initializer",
                                          "recurrent_initializer",
                                          "bias_initializer")})
    return config
