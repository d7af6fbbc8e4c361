"""The GRU, AGRU and AUGRU equations and weight layout: the one statement.

Four implementations follow this statement and cite it; one test
(tests/layers/test_gru_equations.py) runs them on the same inputs and checks
they give the same states:

* `tfrs_din.layers.attention_gru.AttentionGRUCell` (a Keras RNN cell, and
  `masked_scan` over whole sequences);
* `tfrs_din.layers.recurrence.packed_gru_recurrence` (the length-packed
  TensorFlow loop with a hand-written gradient);
* `tfrs_din/ops/packed_gru.cc` (the fused C++ CPU kernels of that loop);
* `tests/reference.py` (`gru_step`, NumPy, for the tests).

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

# Column blocks of the [., 3H] kernels and biases, in order.
GATE_ORDER = ("update", "reset", "candidate")
# Values of `AttentionGRUCell(gate=...)` and the g_t each selects.
GATES = {"none": "u_t", "AGRU": "a_t", "AUGRU": "a_t * u_t",
         "AUGRU_OFFICIAL": "u_t + a_t * (1 - u_t)"}
