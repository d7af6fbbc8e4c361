"""The GRU, AGRU and AUGRU equations and weight layout: the one statement.

The functions below are the TensorFlow form of these equations, written once
and called by every TensorFlow implementation: the Keras cell
(`tfrs_din.layers.attention_gru.AttentionGRUCell`), the length-packed loop with
its hand-written gradient (`tfrs_din.layers.recurrence.packed_gru_recurrence`)
and the exports' fast scorer (`tfrs_din.serving.inference`). Two more
implementations follow the statement and cite it: the fused C++ CPU kernels
(`tfrs_din/ops/packed_gru.cc`, whose `gate` attr names the gates as
`KERNEL_GATES` maps them) and the NumPy reference of the tests
(`tests/reference.py`). tests/layers/test_gru_equations.py runs them on the
same inputs and checks they give the same states.

Equations (DIEN, Zhou et al. 2019, arXiv:1809.03672: eq. 1-4 for the GRU of
the interest extractor, eq. 9 for AGRU, eq. 10-11 for AUGRU), for input
x_t [D], state h_{t-1} [H] and attention score a_t (a scalar):

    [x_u, x_r, x_h] = W x_t + b                  (W: `kernel` [D, 3H], b [3H])
    [p_u, p_r, p_h] = U h_{t-1} + c              (U: `recurrent_kernel` [H, 3H],
                                                  c: `recurrent_bias` [3H])
    u_t  = sigmoid(x_u + p_u)                    update gate
    r_t  = sigmoid(x_r + p_r)                    reset gate
    h~_t = tanh(x_h + r_t * p_h)                 candidate (reset applied after
                                                  the recurrent product, as in
                                                  cuDNN / Keras reset_after=True)
    g_t  = u_t                                   GRU  (gate "none")
           a_t                                   AGRU
           a_t * u_t                             AUGRU (the paper's eq. 10-11)
           u_t + a_t * (1 - u_t)                 AUGRU_OFFICIAL
    h_t  = (1 - g_t) * h_{t-1} + g_t * h~_t
         = h_{t-1} + g_t * (h~_t - h_{t-1})

AUGRU_OFFICIAL is the form of the official code (github.com/mouna99/dien,
`script/utils.py`, `VecAttGRUCell`): TensorFlow's GRU gate there is the keep
gate k_t = 1 - u_t (h_t = k_t h_{t-1} + (1 - k_t) h~_t) and the attention
scales it, k'_t = (1 - a_t) k_t, so 1 - g_t = (1 - a_t)(1 - u_t). With a_t = 0
it is a plain GRU step (the paper's AUGRU keeps the state instead); with
a_t = 1 the state is replaced by the candidate.

Gate layout: the 3H columns of W, U, b and c are the update gate, the reset
gate, then the candidate, in that order (`GATE_ORDER`), each H wide.

Attention-based inputs (AIGRU, DIEN eq. 8) are not a cell: the input is
scaled, x_t <- a_t * x_t, and a plain GRU runs. Masked (padded) steps leave
the state unchanged: h_t = h_{t-1}.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import tensorflow as tf

# Column blocks of the [., 3H] kernels and biases, in order.
GATE_ORDER = ("update", "reset", "candidate")
# The gates g_t, as `AttentionGRUCell(gate=...)` and every Python caller name
# them: "none" (a plain GRU), then the attention gates.
GATES = ("none", "AGRU", "AUGRU", "AUGRU_OFFICIAL")
ATTENTION_GATES = GATES[1:]
# The same gates as the fused kernels' `gate` attr spells them
# (tfrs_din/ops/packed_gru.cc): the one place the two spellings meet.
KERNEL_GATES = {"none": "gru", "AGRU": "agru", "AUGRU": "augru",
                "AUGRU_OFFICIAL": "augru_official"}


def check_gate(gate: str) -> None:
  """Raises ValueError naming the choices unless `gate` is one of `GATES`."""
  if gate not in GATES:
    raise ValueError(f"gate must be one of {GATES}, got {gate!r}.")


class Gates(NamedTuple):
  """The gates of one step (see `gates`)."""
  update_reset: tf.Tensor         # [u_t ; r_t], one sigmoid over 2H rows
  update: tf.Tensor               # u_t
  reset: tf.Tensor                # r_t
  recurrent_candidate: tf.Tensor  # p_h, kept for the backward pass
  candidate: tf.Tensor            # h~_t


def gates(x_ur: tf.Tensor, x_h: tf.Tensor, p_ur: tf.Tensor, p_h: tf.Tensor,
          axis: int = -1) -> Gates:
  """u_t, r_t and h~_t from the projected input and the recurrent product.

  Args:
    x_ur: [x_u ; x_r], the update and reset blocks of W x_t + b (2H along
      `axis`).
    x_h: x_h, its candidate block (H along `axis`).
    p_ur: [p_u ; p_r] of U h_{t-1} + c.
    p_h: p_h of U h_{t-1} + c.
    axis: the gate axis: -1 for [rows, H] layouts, -2 for feature-major
      [..., H, rows] ones. x and p may broadcast against each other.
  """
  update_reset = tf.sigmoid(x_ur + p_ur)
  update, reset = tf.split(update_reset, 2, axis=axis)
  candidate = tf.tanh(x_h + reset * p_h)
  return Gates(update_reset, update, reset, p_h, candidate)


def update_gate(gate: str, u: tf.Tensor, a: Optional[tf.Tensor]) -> tf.Tensor:
  """g_t of `gate` from the update gate u_t and the attention a_t.

  Args:
    gate: one of `GATES`.
    u: u_t.
    a: a_t, broadcastable to u (None for "none"). For "AGRU" g_t = a_t is
      returned as given: it broadcasts where it is used.
  """
  if gate == "none":
    return u
  if gate == "AGRU":
    return a
  if gate == "AUGRU":
    return a * u
  if gate == "AUGRU_OFFICIAL":
    return u + a * (1.0 - u)
  check_gate(gate)
  raise AssertionError(gate)


def update_gate_gradients(gate: str, u: tf.Tensor, a: Optional[tf.Tensor],
                          d_g: tf.Tensor
                          ) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
  """(dL/du_t, dL/da_t) from dL/dg_t, the derivatives of `update_gate`.

  dL/da_t is element-wise, shaped like d_g (the caller sums it over the axes
  a_t was broadcast along); None for "none".
  """
  if gate == "none":
    return d_g, None
  if gate == "AGRU":
    return tf.zeros_like(u), d_g
  if gate == "AUGRU":
    return d_g * a, d_g * u
  if gate == "AUGRU_OFFICIAL":    # dg/du = 1 - a, dg/da = 1 - u
    return d_g * (1.0 - a), d_g * (1.0 - u)
  check_gate(gate)
  raise AssertionError(gate)


def next_state(h: tf.Tensor, g: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
  """h_t = h_{t-1} + g_t * (h~_t - h_{t-1})."""
  return h + g * (candidate - h)


def step(gate: str, x: tf.Tensor, p: tf.Tensor, h: tf.Tensor,
         a: Optional[tf.Tensor] = None, axis: int = -1) -> tf.Tensor:
  """One step: h_t from x = W x_t + b, p = U h_{t-1} + c and h_{t-1}.

  Args:
    gate: one of `GATES`.
    x: the projected input, 3H along `axis` (`GATE_ORDER`); may broadcast
      against p (e.g. one input shared by several rows).
    p: the recurrent product, 3H along `axis`.
    h: h_{t-1}, H along `axis`.
    a: a_t, broadcastable to h (None for "none").
    axis: the gate axis (see `gates`).

  Example:

  >>> h = step("AUGRU", tf.zeros([1, 6]), tf.zeros([1, 6]), tf.ones([1, 2]),
  ...          tf.constant([[1.0]]))
  >>> h.numpy()   # u = 0.5, h~ = 0: halfway from h to the candidate
  array([[0.5, 0.5]], dtype=float32)
  """
  units = int(h.shape[axis])
  x_ur, x_h = tf.split(x, [2 * units, units], axis=axis)
  p_ur, p_h = tf.split(p, [2 * units, units], axis=axis)
  values = gates(x_ur, x_h, p_ur, p_h, axis=axis)
  return next_state(h, update_gate(gate, values.update, a), values.candidate)
