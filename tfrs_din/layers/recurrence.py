"""A length-packed GRU recurrence with a hand-written backward pass.

Two costs dominate a GRU over padded behaviour sequences on a CPU, and this
module removes both:

* Padding. Histories are mostly shorter than the padded length (in our
  benchmark data a third of the positions are real). `Packing`
  orders the rows by length so that the rows still running at step k are a
  prefix; step k then works on those rows only, and the work is proportional
  to the number of real positions, not to batch x max length.
* Loop bookkeeping. TensorFlow's automatic gradient of a `tf.while_loop` keeps
  a TensorList per intermediate, zero-fills gradients of unused loop outputs
  and accumulates the kernel gradient step by step. The backward pass here is
  its own loop that recomputes each step's gates from the saved states and
  emits per-step pre-activation gradients; the kernel and bias gradients are
  then one matrix product after the loop.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfrs_din.layers import gru_equations as eq
from tfrs_din.ops import fused_recurrence


class Packing:
  """Maps [B, T] padded sequences to a step-major packed layout and back.

  Valid positions of each row are taken in order (a mask may have gaps: a
  masked step is skipped). Rows are sorted by their number of valid steps, so
  that packed step k holds rows 0..n_k - 1 with n_0 >= n_1 >= ...

  Args:
    mask: [B, T] boolean, True at valid steps.

  Example:

  >>> packing = Packing(tf.sequence_mask([1, 3], 3))
  >>> packing.step_sizes.numpy()
  array([2, 1, 1], dtype=int32)
  """

  def __init__(self, mask: tf.Tensor):
    mask = tf.cast(mask, tf.bool)
    self.batch_size = tf.shape(mask)[0]
    self.lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)      # [B]
    self.order = tf.argsort(self.lengths, direction="DESCENDING",
                            stable=True)                              # k -> b
    rank = tf.math.invert_permutation(self.order)                     # b -> k
    sorted_lengths = tf.gather(self.lengths, self.order)
    steps = tf.range(tf.reduce_max(tf.concat([self.lengths, [0]], 0)))
    self.step_sizes = tf.reduce_sum(tf.cast(
        sorted_lengths[tf.newaxis, :] > steps[:, tf.newaxis], tf.int32), 1)
    self.size = tf.reduce_sum(self.step_sizes)                        # P
    self.running = tf.reduce_sum(tf.cast(self.lengths > 0, tf.int32))  # n_0
    offsets = tf.cumsum(self.step_sizes, exclusive=True)
    offsets = tf.concat([offsets, [0]], 0)                  # safe when T == 0
    step_of = tf.cumsum(tf.cast(mask, tf.int32), axis=1) - 1          # [B, T]
    # Packed position of the last valid step at or before (b, t), or of
    # row b's initial state (stored after the P packed states) if none.
    packed = tf.gather(offsets, tf.maximum(step_of, 0)) + rank[:, tf.newaxis]
    initial = self.size + tf.range(self.batch_size)
    self._state_index = tf.where(step_of >= 0, packed, initial[:, tf.newaxis])
    self._final_index = tf.where(
        self.lengths > 0,
        tf.gather(offsets, tf.maximum(self.lengths - 1, 0)) + rank, initial)
    valid = tf.where(mask)                                            # [P, 2]
    by_packed = tf.math.invert_permutation(
        tf.cast(tf.gather_nd(packed, valid), tf.int32))
    self._coordinates = tf.gather(valid, by_packed)   # packed -> (b, t)

  def pack(self, values: tf.Tensor) -> tf.Tensor:
    """[B, T, ...] -> [P, ...], the valid entries in packed order."""
    return tf.gather_nd(values, self._coordinates)

  def initial_rows(self, initial_state: tf.Tensor) -> tf.Tensor:
    """[B, H] -> [n_0, H], the initial states of the rows that run."""
    return tf.gather(initial_state, self.order)[:self.running]

  def unpack_states(self, packed_states: tf.Tensor,
                    initial_state: tf.Tensor) -> tf.Tensor:
    """[P, H] -> [B, T, H]; a masked step repeats the state before it."""
    table = tf.concat([packed_states, initial_state], axis=0)
    return tf.gather(table, self._state_index)

  def final_states(self, packed_states: tf.Tensor,
                   initial_state: tf.Tensor) -> tf.Tensor:
    """[P, H] -> [B, H], each row's state after its last valid step."""
    table = tf.concat([packed_states, initial_state], axis=0)
    return tf.gather(table, self._final_index)


def packed_gru_recurrence(inputs: tf.Tensor, gate_scale: Optional[tf.Tensor],
                          step_sizes: tf.Tensor, initial_state: tf.Tensor,
                          recurrent_kernel: tf.Tensor,
                          recurrent_bias: tf.Tensor,
                          gate: Optional[str] = None) -> tf.Tensor:
  """Runs a (scaled-update) GRU over packed, already projected inputs.

  The equations of `tfrs_din.layers.gru_equations` (its functions), from the
  projected input x_t = W x + b, with the gate scale s_t as the attention
  a_t: g = u ("none"), s_t ("AGRU"), s_t * u ("AUGRU") or u + s_t * (1 - u)
  ("AUGRU_OFFICIAL"); h_t = h_{t-1} + g * (h~ - h_{t-1}).

  Differentiable in inputs, gate scale, initial state, kernel and bias.

  Args:
    inputs: [P, 3H] projected inputs in the layout of `Packing`: step k is
      rows offset_k .. offset_k + n_k - 1, and its row r continues row r of
      step k - 1. Gates in the order u, r, h.
    gate_scale: [P, 1] the scale s_t, or None for a plain GRU.
    step_sizes: [K] int32, n_0 >= n_1 >= ... >= n_{K-1} > 0, summing to P.
    initial_state: [n_0, H].
    recurrent_kernel: U, [H, 3H].
    recurrent_bias: c, [3H].
    gate: one of `gru_equations.GATES` ("none", "AGRU", "AUGRU",
      "AUGRU_OFFICIAL"); None means "none" without a gate scale and "AUGRU"
      with one.

  Returns:
    The packed states h_t, [P, H].

  Inside `tfrs_din.ops.fused_kernels()` (Keras training and evaluation steps)
  on CPU, two fused C++ ops run the loops below; elsewhere, and in exported
  models, these TensorFlow loops do.

  Example:

  >>> h = packed_gru_recurrence(tf.zeros([3, 6]), None, tf.constant([2, 1]),
  ...                           tf.zeros([2, 2]), tf.zeros([2, 6]),
  ...                           tf.zeros([6]))
  >>> h.shape
  TensorShape([3, 2])
  """
  units = int(recurrent_kernel.shape[0])
  scaled = gate_scale is not None
  if gate is None:
    gate = "AUGRU" if scaled else "none"
  eq.check_gate(gate)
  if scaled != (gate != "none"):
    raise ValueError(f"gate {gate!r} needs a gate_scale" if not scaled else
                     "a plain GRU takes no gate_scale.")
  fused = fused_recurrence(inputs, gate_scale, step_sizes, initial_state,
                           recurrent_kernel, recurrent_bias,
                           eq.KERNEL_GATES[gate])
  if fused is not None:
    return fused
  if not scaled:
    gate_scale = tf.zeros([0, 1], inputs.dtype)   # a placeholder input

  def gates(x_ur, x_h, h, kernel, bias):
    p_ur, p_h = tf.split(tf.nn.bias_add(tf.matmul(h, kernel), bias),
                         [2 * units, units], axis=1)
    return eq.gates(x_ur, x_h, p_ur, p_h, axis=1)

  # Each loop reads one array and writes one: every loop variable costs
  # control-flow ops at every step, so per-step tensors travel side by side.
  s_width = 1 if scaled else 0

  def steps_of(values):
    array = tf.TensorArray(values.dtype, tf.size(step_sizes),
                           infer_shape=False, element_shape=tf.TensorShape(
                               [None, values.shape[1]]))
    return array.split(values, step_sizes)

  def new_array(width):
    return tf.TensorArray(inputs.dtype, tf.size(step_sizes), infer_shape=False,
                          element_shape=tf.TensorShape([None, width]))

  row_shape = tf.TensorShape([None, units])
  loop_shapes = (tf.TensorShape([]), row_shape, tf.TensorShape(None))

  @tf.custom_gradient
  def recurrence(x, scale, h0, kernel, bias):
    num_steps = tf.size(step_sizes)
    x_and_s = tf.concat([x, scale], 1) if scaled else x
    in_steps = steps_of(x_and_s)

    def forward(k, h, out):
      x_ur, x_h, s = tf.split(in_steps.read(k), [2 * units, units, s_width], 1)
      h = h[:tf.shape(x_h)[0]]            # rows that are still running
      g = gates(x_ur, x_h, h, kernel, bias)
      h = eq.next_state(h, eq.update_gate(gate, g.update, s), g.candidate)
      return k + 1, h, out.write(k, h)

    _, _, out = tf.while_loop(lambda k, *_: k < num_steps, forward,
                              (0, h0, new_array(units)),
                              shape_invariants=loop_shapes)
    states = out.concat()

    def backward(d_states):
      # The state each packed step started from: row r of step k > 0 starts
      # from row r of step k - 1, n_{k-1} positions earlier; row r of step 0
      # (position r) from h0[r], stored after the P states.
      size = tf.shape(x)[0]
      position = tf.range(size)
      step_of = tf.repeat(tf.range(num_steps), step_sizes)
      previous_index = tf.where(
          step_of > 0,
          position - tf.gather(step_sizes, tf.maximum(step_of - 1, 0)),
          size + position)
      previous = tf.gather(tf.concat([states, h0], 0), previous_index)
      in_steps = steps_of(tf.concat([previous, d_states, x_and_s], 1))
      kernel_t = tf.transpose(kernel)
      # Rows that ended at step k - 1 join dh with no gradient from later.
      growth = tf.concat([[0], step_sizes[:-1] - step_sizes[1:]], 0)
      paddings = tf.pad(growth[:, tf.newaxis, tf.newaxis], [[0, 0], [0, 1],
                                                            [1, 0]])

      def step(k, dh, out):
        h, d_state, x_ur, x_h, s = tf.split(
            in_steps.read(k), [units, units, 2 * units, units, s_width], 1)
        dh = dh + d_state
        values = gates(x_ur, x_h, h, kernel, bias)
        u, ur, candidate = values.update, values.update_reset, values.candidate
        g = eq.update_gate(gate, u, s)
        d_gated = dh * g                                 # dL/dh~ * g
        d_candidate = d_gated * (1.0 - candidate * candidate)
        d_g = dh * (candidate - h)                       # dL/dg
        d_u, d_s = eq.update_gate_gradients(gate, u, s, d_g)
        # s is one scale per row, broadcast over the H units.
        d_s = [] if d_s is None else [tf.reduce_sum(d_s, 1, keepdims=True)]
        d_ur = (tf.concat([d_u, d_candidate * values.recurrent_candidate], 1)
                * (ur * (1.0 - ur)))
        d_projected = tf.concat([d_ur, d_candidate * values.reset], 1)
        dh = dh - d_gated + tf.matmul(d_projected, kernel_t)
        out = out.write(k, tf.concat([d_projected, d_candidate] + d_s, 1))
        dh = tf.pad(dh, paddings[k])
        dh.set_shape(row_shape)
        return k - 1, dh, out

      last = tf.concat([step_sizes, [0]], 0)[tf.maximum(num_steps - 1, 0)]
      dh_last = tf.zeros(tf.stack([last, units]), h0.dtype)
      _, d_h0, out = tf.while_loop(
          lambda k, *_: k >= 0, step,
          (num_steps - 1, dh_last, new_array(4 * units + s_width)),
          shape_invariants=loop_shapes)
      d_projected, d_xh, d_scale = tf.split(out.concat(),
                                            [3 * units, units, s_width], 1)
      d_x = tf.concat([d_projected[:, :2 * units], d_xh], axis=1)
      d_kernel = tf.matmul(previous, d_projected, transpose_a=True)
      d_bias = tf.reduce_sum(d_projected, axis=0)
      return d_x, d_scale if scaled else None, d_h0, d_kernel, d_bias

    return states, backward

  kernel = tf.convert_to_tensor(recurrent_kernel)
  bias = tf.convert_to_tensor(recurrent_bias)
  # No step at all (e.g. serving a user without history): nothing to run.
  return tf.cond(
      tf.size(step_sizes) > 0,
      lambda: recurrence(inputs, gate_scale, initial_state, kernel, bias),
      lambda: tf.zeros([0, units], inputs.dtype))
