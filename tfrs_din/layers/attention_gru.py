"""GRU cells with attention (DIEN's AGRU/AUGRU) and the interest evolving layer."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import tensorflow as tf

from tfrs_din.layers import gru_equations as eq
from tfrs_din.layers.arrays import accepts_arrays
from tfrs_din.layers.gru_equations import ATTENTION_GATES
from tfrs_din.layers.recurrence import Packing, packed_gru_recurrence

# Values of `InterestEvolution(gru_type=...)`: AIGRU scales the input, the
# others are attention gates of the cell.
GRU_TYPES = ("AIGRU",) + ATTENTION_GATES


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays
class AttentionGRUCell(tf.keras.layers.Layer):
  """A GRU cell whose update may be driven by an attention score a_t.

      h_t = (1 - g_t) * h_{t-1} + g_t * h~_t,
      g_t = u_t | a_t | a_t * u_t | u_t + a_t * (1 - u_t)

  for gate "none" (plain GRU), "AGRU", "AUGRU" (the paper's) and
  "AUGRU_OFFICIAL" (the official code's `VecAttGRUCell`, where a_t scales the
  keep gate: 1 - g_t = (1 - a_t)(1 - u_t)): the equations and the
  [update, reset, candidate] weight layout are stated once in
  `tfrs_din.layers.gru_equations`.

  References: DIEN, arXiv:1809.03672, eq. 1-4 (GRU), eq. 9 (AGRU), eq. 10-11
  (AUGRU); github.com/mouna99/dien `script/utils.py` (VecAttGRUCell).

  Input: [B, D] = x_t, or [B, D + 1] = [x_t ; a_t] for the attention gates;
  state [B, units]. Output: the new state [B, units] (and [state]).

  As a Keras RNN cell its input is x_t, or [x_t ; a_t] (attention last) for the
  attention gates. `masked_scan` runs the same equations over a whole sequence:
  one matrix product for the input projection (`project_inputs`), then
  `packed_gru_recurrence`, whose hand-written gradient is much cheaper than
  differentiating a loop of `step` calls.

  Args:
    units: size of the hidden state.
    gate: "none", "AGRU", "AUGRU" or "AUGRU_OFFICIAL".
    kernel_initializer: initializer of W (input kernel, [D, 3H]).
    recurrent_initializer: initializer of U (recurrent kernel, [H, 3H]).
    bias_initializer: initializer of b and c.

  Example:

  >>> rnn = tf.keras.layers.RNN(AttentionGRUCell(2), return_sequences=True)
  >>> rnn(tf.ones([3, 5, 4])).shape      # [B, T, D] -> [B, T, units]
  TensorShape([3, 5, 2])
  """

  def __init__(self, units: int, gate: str = "none",
               kernel_initializer: Any = "glorot_uniform",
               recurrent_initializer: Any = "orthogonal",
               bias_initializer: Any = "zeros", **kwargs):
    super().__init__(**kwargs)
    eq.check_gate(gate)
    self.units = int(units)
    self.gate = gate
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
    self.recurrent_initializer = tf.keras.initializers.get(
        recurrent_initializer)
    # Two bias vectors: each gets its own instance (see `MLP`).
    self.bias_initializer = tf.keras.initializers.get(bias_initializer)
    self.state_size = self.units
    self.output_size = self.units

  def build(self, input_shape):
    dim = int(input_shape[-1]) - (0 if self.gate == "none" else 1)
    bias = tf.keras.initializers.serialize(self.bias_initializer)
    self.kernel = self.add_weight(name="kernel", shape=(dim, 3 * self.units),
                                  initializer=self.kernel_initializer)
    self.recurrent_kernel = self.add_weight(
        name="recurrent_kernel", shape=(self.units, 3 * self.units),
        initializer=self.recurrent_initializer)
    self.bias = self.add_weight(name="bias", shape=(3 * self.units,),
                                initializer=tf.keras.initializers.get(bias))
    self.recurrent_bias = self.add_weight(
        name="recurrent_bias", shape=(3 * self.units,),
        initializer=tf.keras.initializers.get(bias))
    super().build(input_shape)

  def project_inputs(self, x: tf.Tensor) -> tf.Tensor:
    """W x + b for any leading shape: [..., D] -> [..., 3H]."""
    return tf.tensordot(x, self.kernel, axes=1) + self.bias

  def recurrent_product(self, h: tf.Tensor) -> tf.Tensor:
    """U h + c: [B, H] -> [B, 3H]."""
    return tf.matmul(h, self.recurrent_kernel) + self.recurrent_bias

  def step(self, x_proj: tf.Tensor, attention: Optional[tf.Tensor],
           h: tf.Tensor) -> tf.Tensor:
    """One update from projected input [B, 3H], attention [B] and state [B, H]
    (`gru_equations.step` with this cell's gate and recurrent weights)."""
    if attention is not None:
      attention = tf.expand_dims(attention, -1)
    return eq.step(self.gate, x_proj, self.recurrent_product(h), h,
                   None if self.gate == "none" else attention)

  def call(self, inputs: tf.Tensor, states) -> Tuple[tf.Tensor, list]:
    h = states[0] if isinstance(states, (list, tuple)) else states
    if h.shape.rank == 3:  # [h] given as nested Python lists: one [1, B, H]
      h = h[0]
    if self.gate == "none":
      x, attention = inputs, None
    else:
      x, attention = inputs[:, :-1], inputs[:, -1]
    h = self.step(self.project_inputs(x), attention, h)
    return h, [h]

  def get_config(self) -> dict:
    config = super().get_config()
    serialize = tf.keras.initializers.serialize
    config.update(units=self.units, gate=self.gate,
                  kernel_initializer=serialize(self.kernel_initializer),
                  recurrent_initializer=serialize(self.recurrent_initializer),
                  bias_initializer=serialize(self.bias_initializer))
    return config


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
class AGRUCell(AttentionGRUCell):
  """GRU with attention in place of the update gate, g_t = a_t.

  References: DIEN, arXiv:1809.03672, eq. 9; `tfrs_din.layers.gru_equations`.

  Input: [B, D + 1] = [x_t ; a_t] (attention last); state [B, units].
  Output: the new state, [B, units].

  Example:

  >>> cell = AGRUCell(2)
  >>> h, _ = cell(tf.ones([3, 4 + 1]), [tf.zeros([3, 2])])
  >>> h.shape
  TensorShape([3, 2])
  """

  def __init__(self, units: int, **kwargs):
    kwargs.pop("gate", None)
    super().__init__(units, gate="AGRU", **kwargs)


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
class AUGRUCell(AttentionGRUCell):
  """GRU with an attentional update gate, g_t = a_t * u_t.

  References: DIEN, arXiv:1809.03672, eq. 10-11;
  `tfrs_din.layers.gru_equations`.

  Input: [B, D + 1] = [x_t ; a_t] (attention last); state [B, units].
  Output: the new state, [B, units].

  Example:

  >>> rnn = tf.keras.layers.RNN(AUGRUCell(2))
  >>> rnn(tf.ones([3, 5, 4 + 1])).shape   # [B, T, D + 1] -> [B, units]
  TensorShape([3, 2])
  """

  def __init__(self, units: int, **kwargs):
    kwargs.pop("gate", None)
    super().__init__(units, gate="AUGRU", **kwargs)


def masked_scan(cell: AttentionGRUCell, inputs: tf.Tensor, mask: tf.Tensor,
                attention: Optional[tf.Tensor] = None,
                initial_state: Optional[tf.Tensor] = None,
                inputs_projected: bool = False
                ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Runs `cell` over [B, T, D] inputs; padded steps keep the previous state.

  Args:
    cell: a built or unbuilt `AttentionGRUCell`.
    inputs: [B, T, D].
    mask: [B, T] boolean, True at valid steps.
    attention: [B, T] scores for the attention gates, else None.
    initial_state: [B, H], zeros by default.
    inputs_projected: `inputs` are already `cell.project_inputs(x)`, [B, T, 3H]
      (lets callers share the projection between sequences).

  Returns:
    (states [B, T, H], the state after every step; final state [B, H]).
  """
  if not cell.built:
    if inputs_projected:
      raise ValueError("inputs_projected needs a built cell.")
    extra = 0 if cell.gate == "none" else 1
    cell.build(tf.TensorShape([None, inputs.shape[-1] + extra]))
  if initial_state is None:
    initial_state = tf.zeros([tf.shape(inputs)[0], cell.units],
                             dtype=inputs.dtype)
  # Only valid steps are computed: a padded step would leave the state as is.
  packing = Packing(mask)
  inputs = packing.pack(inputs)
  if not inputs_projected:
    inputs = cell.project_inputs(inputs)
  scale = None
  if cell.gate != "none":
    scale = tf.expand_dims(packing.pack(tf.cast(attention, inputs.dtype)), -1)
  states = packed_gru_recurrence(
      inputs, scale, packing.step_sizes, packing.initial_rows(initial_state),
      cell.recurrent_kernel, cell.recurrent_bias, gate=cell.gate)
  return (packing.unpack_states(states, initial_state),
          packing.final_states(states, initial_state))


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays
class InterestEvolution(tf.keras.layers.Layer):
  """DIEN's interest evolving layer: an attention GRU over interest states.

      AIGRU: i'_t = a_t * h_t fed to a plain GRU
      AGRU / AUGRU / AUGRU_OFFICIAL: a_t drives the cell's update (see
        `AttentionGRUCell`)

  Returns the final evolved state h'_T (the state after the last valid step).

  References: DIEN, arXiv:1809.03672, eq. 8 (AIGRU), eq. 9 (AGRU), eq. 10-11
  (AUGRU); equations in `tfrs_din.layers.gru_equations`.

  Input: states [B, T, H], attention [B, T] (or [B, N, T]), mask [B, T].
  Output: [B, units] (or [B, N, units]); with `return_sequences` also
  [B, T, units] (or [B, N, T, units]).

  Args:
    units: size of the evolved state.
    gru_type: "AIGRU", "AGRU", "AUGRU" (the paper's) or "AUGRU_OFFICIAL"
      (the official code's).
    kernel_initializer, recurrent_initializer, bias_initializer: those of the
      cell (see `AttentionGRUCell`).

  Call args:
    states: [B, T, H] interest states from the extractor.
    attention: [B, T] attention of each state to the target item, or
      [B, N, T] for N candidates per user (the result is then [B, N, units]).
    mask: [B, T] boolean, True at valid steps.
    return_sequences: also return every step's state, [B, T, units]
      ([B, N, T, units] for N candidates).

  Example:

  >>> evolution = InterestEvolution(4, gru_type="AUGRU")
  >>> final = evolution(tf.ones([2, 5, 3]), tf.fill([2, 5], 0.2),
  ...                   tf.sequence_mask([2, 5], 5))
  >>> final.shape
  TensorShape([2, 4])
  """

  def __init__(self, units: int, gru_type: str = "AUGRU",
               kernel_initializer: Any = "glorot_uniform",
               recurrent_initializer: Any = "orthogonal",
               bias_initializer: Any = "zeros", **kwargs):
    super().__init__(**kwargs)
    if gru_type not in GRU_TYPES:
      raise ValueError(f"gru_type must be one of {GRU_TYPES}, got {gru_type!r}.")
    self.units = int(units)
    self.gru_type = gru_type
    self.cell = AttentionGRUCell(
        units, gate="none" if gru_type == "AIGRU" else gru_type,
        kernel_initializer=kernel_initializer,
        recurrent_initializer=recurrent_initializer,
        bias_initializer=bias_initializer, name="cell")

  def call(self, states: tf.Tensor, attention: tf.Tensor, mask: tf.Tensor,
           return_sequences: bool = False):
    attention = tf.cast(attention, states.dtype)  # e.g. a list of 0/1 ints
    mask = tf.cast(mask, tf.bool)
    if attention.shape.rank == 3:
      return self._evolve_per_candidate(states, attention, mask,
                                        return_sequences)
    sequence, final = self._evolve(states, attention, mask)
    return (final, sequence) if return_sequences else final

  def _evolve(self, states, attention, mask):
    """One candidate per row: attention [B, T] -> (sequence, final)."""
    if self.gru_type == "AIGRU":
      return masked_scan(self.cell, states * tf.expand_dims(attention, -1),
                         mask)
    return masked_scan(self.cell, states, mask, attention)

  def _evolve_per_candidate(self, states, attention, mask, return_sequences):
    """N candidates per user: attention [B, N, T] -> [B, N, units].

    AGRU/AUGRU feed the candidate-independent states to the cell, so their
    input projection W h_t is computed once per user and shared by the N
    candidates; only the recurrence runs per (user, candidate).
    """
    if attention.shape[1] == 1:    # training: one candidate per example
      sequence, final = self._evolve(states, tf.squeeze(attention, 1), mask)
      if not return_sequences:
        return tf.expand_dims(final, 1)
      return tf.expand_dims(final, 1), tf.expand_dims(sequence, 1)
    batch, num = tf.shape(attention)[0], tf.shape(attention)[1]
    steps = tf.shape(attention)[2]

    def per_candidate(t):  # [B, T, ...] -> [B * N, T, ...]
      tiled = tf.repeat(tf.expand_dims(t, 1), num, axis=1)
      return tf.reshape(tiled, tf.concat([[-1, steps], tf.shape(t)[2:]], 0))

    flat_attention = tf.reshape(attention, [-1, steps])
    if self.gru_type == "AIGRU":
      sequence, final = masked_scan(
          self.cell, per_candidate(states) * tf.expand_dims(flat_attention, -1),
          per_candidate(mask))
    else:
      if not self.cell.built:
        self.cell.build(tf.TensorShape([None, states.shape[-1] + 1]))
      sequence, final = masked_scan(
          self.cell, per_candidate(self.cell.project_inputs(states)),
          per_candidate(mask), flat_attention, inputs_projected=True)
    final = tf.reshape(final, [batch, num, self.units])
    if not return_sequences:
      return final
    return final, tf.reshape(sequence, [batch, num, steps, self.units])

  def get_config(self) -> dict:
    config = super().get_config()
    cell = self.cell.get_config()
    config.update(units=self.units, gru_type=self.gru_type,
                  **{k: cell[k] for k in ("kernel_initializer",
                                          "recurrent_initializer",
                                          "bias_initializer")})
    return config
