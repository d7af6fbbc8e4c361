"""The exports' `score_candidates`: the model's probabilities, computed faster.

`CTRModel.score_candidates` is written for training (valid pairs gathered
into ragged layouts, Dice as batch-normalise-then-gate, the tower input
concatenated). At inference every normalisation is a per-channel affine map
with constants, so this module computes the same probabilities from the same
variables with fewer and larger kernels:

* DIN's activation unit. The first dense layer over [q, k, q - k, q * k] is
  W [q, k, q - k, q * k] + c = (W1 + W3) q + (W2 - W3) k + W4 (q * k) + c
  = [q ; 1] A_k with, per behaviour k, the (D + 1) x H matrix
  A_k = [W1 + W3 + diag(k) W4 ; (W2 - W3) k + c]. Building A_k costs D x H
  per behaviour; then every (candidate, behaviour) pair of a user is one
  [N, D + 1] x [D + 1, L * H] matrix product, with no [pairs, D] product
  or [pairs, 4D] concatenation materialised.
* Dice at inference is one expression with constants per channel,
  y = x (alpha + (1 - alpha) sigmoid((x - mean) s)), s = 1 / sqrt(var + eps)
  (`Dice(training=False)`): one fused loop under XLA. (Folding its affine
  part into the dense layer before it, z = x s + b straight out of the matrix
  product, saves one element-wise pass without XLA; measured, it gave no
  gain beyond the noise, so it is not done: docs/benchmarks.md.)
* The tower's first layer is split by input block: the user, numeric and
  behaviour-sum blocks once per user; the candidate block and the
  candidate * behaviour-sum block as one per-user matrix
  W_c + diag(s) W_cs; a tower-input batch normalisation folds into it.
* DIEN's interest extractor runs once per user, its input projection once per
  user; the evolution GRU runs over [B, N] rows at once, its input
  projection shared by the N candidates (AGRU/AUGRU forms).

DIN scores users one at a time (a loop over the batch): memory holds one
user's pairs, and each user's work follows its own history, `BLOCK`
behaviours at a time ([N, BLOCK * H] intermediates that stay in cache),
accumulating the attention-weighted sum (online for a softmax); under XLA
(static shapes) the block loop still stops at the user's length. DIEN runs
its evolution GRU as `EVOLUTION_GROUPS` independent loops over groups of
candidates, separate calls that TensorFlow runs side by side (one loop's
steps are too small to share between threads).

`supports(model)` says whether a model's configuration is covered; others
(e.g. `BaseModel`, batch-normalised towers) use `model.score_candidates`.
`Scorer(jit_compile=True)` compiles the numeric part with XLA; shapes are then
padded to buckets (powers of two, or `max_history` for histories) so that a
server compiles a handful of programs, not one per request shape.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import tensorflow as tf

from tfrs_din.features import HISTORY_LENGTH, HISTORY_PREFIX, FeatureSpec
from tfrs_din.layers.dice import Dice
from tfrs_din.layers.mlp import PReLU
from tfrs_din.models.ctr_model import pool_behaviours

# --------------------------------------------------------------------------- #
# Dense layers and activations at inference.
# --------------------------------------------------------------------------- #


def _supported_activation(layer) -> bool:
  return isinstance(layer, (Dice, PReLU, tf.keras.layers.Activation))


def _activate(activation, x: tf.Tensor) -> tf.Tensor:
  """An activation layer of the model, in inference mode."""
  if isinstance(activation, Dice):
    return activation(x, training=False)
  return activation(x)


def _matmul(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
  """x [..., D] @ kernel [D, H] as one 2-D product."""
  if x.shape.rank == 2:
    return tf.matmul(x, kernel)
  flat = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), kernel)
  return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], tf.shape(kernel)[1:]],
                                    0))


def _mlp_rest(x: tf.Tensor, mlp) -> tf.Tensor:
  """The hidden layers of `mlp` (a `tfrs_din.layers.MLP`) then its output."""
  for dense, activation in zip(mlp._dense, mlp._activations):  # pylint: disable=protected-access
    x = _activate(activation, _matmul(x, dense.kernel) + dense.bias)
  return _matmul(x, mlp._output.kernel) + mlp._output.bias  # pylint: disable=protected-access


# --------------------------------------------------------------------------- #
# DIN's activation unit over dense histories.
# --------------------------------------------------------------------------- #


def _raw_scores(unit, query: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
  """Scores a(q, k) [B, N, L] of a `LocalActivationUnit` before masking and
  normalisation, for query [B, N, D] and keys [B, L, D]."""
  dim = int(query.shape[-1])
  units = unit.hidden_units[0]
  w_q, w_k, w_diff, w_prod = tf.split(unit.first_kernel, 4, axis=0)
  query_kernel = w_q + w_diff                                    # [D, H]
  key_kernel = w_k - w_diff
  # A [B, D + 1, L, H]: rows d < D are (Wq + diag(k) W4)[d], row D the key
  # part and bias of each behaviour.
  keys_t = tf.transpose(keys, [0, 2, 1])                         # [B, D, L]
  rows = (keys_t[:, :, :, tf.newaxis] * w_prod[tf.newaxis, :, tf.newaxis]
          + query_kernel[tf.newaxis, :, tf.newaxis])             # [B, D, L, H]
  last = (_matmul(keys, key_kernel) + unit.first_bias)[:, tf.newaxis]
  batch, width = tf.shape(keys)[0], tf.shape(keys)[1]
  matrices = tf.reshape(tf.concat([rows, last], 1),
                        [batch, dim + 1, width * units])
  ones = tf.ones(tf.concat([tf.shape(query)[:-1], [1]], 0), query.dtype)
  z = tf.matmul(tf.concat([query, ones], -1), matrices)          # [B, N, L*H]
  z = tf.reshape(z, [batch, tf.shape(query)[1], width, units])
  hidden = _activate(unit._first_activation, z)  # pylint: disable=protected-access
  scores = tf.squeeze(_mlp_rest(hidden, unit._rest), -1)  # pylint: disable=protected-access
  return scores + unit.initial_weight


def attention_scores(unit, query: tf.Tensor, keys: tf.Tensor,
                     mask: tf.Tensor) -> tf.Tensor:
  """Weights [B, N, L] of a `LocalActivationUnit` for query [B, N, D] and
  keys [B, L, D] (mask [B, L]); exactly 0 at padded positions."""
  scores = _raw_scores(unit, query, keys)
  valid = tf.broadcast_to(mask[:, tf.newaxis], tf.shape(scores))
  if unit.normalization == "softmax":
    peak = tf.reduce_max(tf.where(valid, scores, scores.dtype.min), -1,
                         keepdims=True)
    exp = tf.where(valid, tf.exp(scores - peak), 0.0)
    return exp / tf.maximum(tf.reduce_sum(exp, -1, keepdims=True),
                            tf.keras.backend.epsilon())
  return tf.where(valid, scores, 0.0)


def pooled_in_blocks(unit, query: tf.Tensor, keys: tf.Tensor,
                     length: tf.Tensor, block: int) -> tf.Tensor:
  """sum_j w_j k_j [1, N, D] of one user's first `length` keys [1, W, D].

  The keys are scored `block` at a time in a loop of ceil(length / block)
  steps: under XLA (static shapes) the work follows the user's own history
  rather than the batch's widest. A softmax is accumulated online (running
  maximum and sum), as the whole row is never held.
  """
  dim = int(keys.shape[-1])
  width = tf.shape(keys)[1]
  keys = _pad_to(keys, 1, (width + block - 1) // block * block)
  num = tf.shape(query)[1]
  softmax = unit.normalization == "softmax"
  floor = tf.constant(-1e30, query.dtype)

  def body(j, pooled, peak, total):
    start = j * block
    k = tf.slice(keys, tf.stack([0, start, 0]), [1, block, dim])
    valid = (start + tf.range(block) < length)[tf.newaxis, tf.newaxis]
    scores = _raw_scores(unit, query, k)                         # [1, N, K]
    if not softmax:
      return j + 1, pooled + tf.matmul(tf.where(valid, scores, 0.0), k), \
          peak, total
    new_peak = tf.maximum(peak, tf.reduce_max(
        tf.where(valid, scores, floor), -1, keepdims=True))
    fade = tf.exp(peak - new_peak)
    weights = tf.where(valid, tf.exp(scores - new_peak), 0.0)
    return (j + 1, pooled * fade + tf.matmul(weights, k), new_peak,
            total * fade + tf.reduce_sum(weights, -1, keepdims=True))

  steps = (length + block - 1) // block
  _, pooled, _, total = tf.while_loop(
      lambda j, *_: j < steps, body,
      (tf.constant(0), tf.zeros(tf.stack([1, num, dim])),
       tf.fill(tf.stack([1, num, 1]), floor), tf.zeros(tf.stack([1, num, 1]))))
  if softmax:
    pooled = pooled / tf.maximum(total, tf.keras.backend.epsilon())
  return pooled


# --------------------------------------------------------------------------- #
# GRUs over dense time-major inputs.
# --------------------------------------------------------------------------- #


def _gate(gate: str, u: tf.Tensor, a: Optional[tf.Tensor]) -> tf.Tensor:
  """g_t of `tfrs_din.layers.gru_equations`."""
  if gate == "none":
    return u
  if gate == "AGRU":
    return tf.broadcast_to(a, tf.shape(u))
  if gate == "AUGRU":
    return a * u
  return u + a * (1.0 - u)     # AUGRU_OFFICIAL


def _recurrence(cell, inputs: Callable[[tf.Tensor], tf.Tensor], steps,
                state: tf.Tensor, mask: tf.Tensor,
                attention: Optional[tf.Tensor] = None,
                collect: Optional[tf.Tensor] = None):
  """Runs `cell`'s equations for `steps` steps from `state` [..., H, R].

  Feature-major layout: the R rows (users, or one user's candidates) are the
  last axis, so every gate is a contiguous block of rows of the recurrent
  product U^T h [..., 3H, R]. (Row-major [R, 3H] slices into gates inside
  the step's fused loop, which XLA's CPU backend runs several times slower,
  measured: docs/benchmarks.md.)

  Args:
    cell: an `AttentionGRUCell` (its recurrent kernel and bias, its gate).
    inputs: t -> projected input (W x_t + b)^T, broadcastable to
      [..., 3H, R].
    steps: number of steps (a scalar).
    state: initial state [..., H, R].
    mask: [T, ..., 1, R or 1], False where the state is kept.
    attention: [T, ..., 1, R] gate scores a_t, for the attention gates.
    collect: T >= steps: also return every step's state, [T, ..., H, R]
      (zeros after `steps`).
  """
  units = cell.units
  kernel = tf.transpose(cell.recurrent_kernel)                   # [3H, H]
  bias = cell.recurrent_bias[:, tf.newaxis]                      # [3H, 1]
  gate = cell.gate

  def body(t, h, out):
    x = inputs(t)
    p = tf.matmul(kernel, h) + bias                              # [..., 3H, R]
    u = tf.sigmoid(x[..., :units, :] + p[..., :units, :])
    r = tf.sigmoid(x[..., units:2 * units, :] + p[..., units:2 * units, :])
    candidate = tf.tanh(x[..., 2 * units:, :] + r * p[..., 2 * units:, :])
    g = _gate(gate, u, None if attention is None else attention[t])
    h = tf.where(mask[t], h + g * (candidate - h), h)
    if collect is not None:
      out = out.write(t, h)
    return t + 1, h, out

  out = tf.TensorArray(state.dtype, size=0 if collect is None else collect,
                       element_shape=state.shape)
  _, state, out = tf.while_loop(lambda t, *_: t < steps, body,
                                (tf.constant(0), state, out))
  return state if collect is None else (state, out.stack())


# --------------------------------------------------------------------------- #
# The models.
# --------------------------------------------------------------------------- #


def supports(model) -> bool:
  """Whether `Scorer` covers this model's configuration (else the export uses
  `model.score_candidates`)."""
  from tfrs_din.models.dien import DIENModel  # pylint: disable=g-import-not-at-top
  from tfrs_din.models.din import DINModel  # pylint: disable=g-import-not-at-top
  if type(model) not in (DINModel, DIENModel):  # pylint: disable=unidiomatic-typecheck
    return False
  if model.compute_dtype != "float32":
    return False
  mlps = [model.tower]
  if isinstance(model, DINModel):
    mlps.append(model.attention._rest)  # pylint: disable=protected-access
    if not _supported_activation(model.attention._first_activation):  # pylint: disable=protected-access
      return False
  elif model.attention == "mlp":
    mlps.append(model.attention_unit._rest)  # pylint: disable=protected-access
    query = model.attention_query.layers
    if (len(query) != 2 or not isinstance(query[0], tf.keras.layers.Dense)
        or query[0].activation is not tf.keras.activations.linear
        or not _supported_activation(query[1])):
      return False
  for mlp in mlps:
    if any(n is not None for n in mlp._norms) or mlp._output is None:  # pylint: disable=protected-access
      return False
    if not all(_supported_activation(a) for a in mlp._activations):  # pylint: disable=protected-access
      return False
  norm = model.tower_norm
  if norm is not None and (norm.axis not in ([-1], -1, [2])):
    return False
  return True


def _embed(model, features: Dict[str, tf.Tensor],
           candidates: Dict[str, tf.Tensor]):
  """user [B, Du], candidate [B, N, Di], history [B, L, Di] (zeros at
  padding), mask [B, L], numeric [B, n]."""
  spec: FeatureSpec = model.spec
  tables = model.embedder.tables

  def lookup(name, ids):
    return tf.gather(tables[name].embeddings, ids)

  history_ids = features[HISTORY_PREFIX + spec.item_id]
  mask = tf.sequence_mask(features[HISTORY_LENGTH],
                          maxlen=tf.shape(history_ids)[1])
  history = tf.concat([lookup(f.name, features[HISTORY_PREFIX + f.name])
                       for f in spec.item_features], -1)
  history = tf.where(mask[..., tf.newaxis], history, 0.0)
  candidate = tf.concat([lookup(f.name, candidates[f.name])
                         for f in spec.item_features], -1)
  batch = tf.shape(history_ids)[0]
  user = [lookup(f.name, features[f.name]) for f in spec.user_features]
  user = tf.concat(user, -1) if user else tf.zeros([batch, 0])
  numeric = [tf.cast(features[n], tf.float32)[:, tf.newaxis]
             for n in spec.numeric_features]
  numeric = tf.concat(numeric, -1) if numeric else tf.zeros([batch, 0])
  return user, candidate, history, mask, numeric


def _tower(model, user, candidate, interest, numeric, behaviour_sum):
  """Logits [B, N] of the tower over [user ; candidate ; interest ; numeric
  (; s ; candidate * s)], its first layer split by block."""
  tower = model.tower
  first = tower._dense[0]  # pylint: disable=protected-access
  kernel, bias = first.kernel, first.bias
  if model.tower_norm is not None:   # inference: a per-feature affine map
    norm = model.tower_norm
    scale = tf.math.rsqrt(norm.moving_variance + norm.epsilon)
    if norm.gamma is not None:
      scale = scale * norm.gamma
    shift = -norm.moving_mean * scale
    if norm.beta is not None:
      shift = shift + norm.beta
    bias = bias + tf.linalg.matvec(kernel, shift, transpose_a=True)
    kernel = kernel * scale[:, tf.newaxis]
  widths = [int(user.shape[-1]), int(candidate.shape[-1]),
            int(interest.shape[-1]), int(numeric.shape[-1])]
  extras = model.behaviour_sum_in_tower
  if extras:
    widths += [int(candidate.shape[-1])] * 2
  parts = tf.split(kernel, widths, axis=0)
  per_user = (tf.matmul(user, parts[0]) + tf.matmul(numeric, parts[3])
              + bias)                                           # [B, H]
  per_candidate = tf.broadcast_to(parts[1], tf.concat(
      [tf.shape(user)[:1], tf.shape(parts[1])], 0))             # [B, Di, H]
  if extras:
    per_user += tf.matmul(behaviour_sum, parts[4])
    per_candidate = per_candidate + behaviour_sum[:, :, tf.newaxis] * parts[5]
  batch = tf.shape(user)[0]
  matrices = tf.concat([per_candidate, tf.broadcast_to(
      parts[2], tf.concat([[batch], tf.shape(parts[2])], 0))], 1)
  z = (tf.matmul(tf.concat([candidate, interest], -1), matrices)
       + per_user[:, tf.newaxis])                               # [B, N, H]
  x = _activate(tower._activations[0], z)  # pylint: disable=protected-access
  for dense, activation in zip(tower._dense[1:], tower._activations[1:]):  # pylint: disable=protected-access
    x = _activate(activation, _matmul(x, dense.kernel) + dense.bias)
  return tf.squeeze(_matmul(x, tower._output.kernel) + tower._output.bias, -1)  # pylint: disable=protected-access


# DIN scores a user's behaviours this many at a time (`pooled_in_blocks`):
# [N, BLOCK * 80] intermediates stay in cache (measured: docs/benchmarks.md).
BLOCK = 16


def _behaviour_summary(model, history, mask):
  """The tower's s [B, Di] of `history` [B, W, Di] (zeros where `mask` is
  False), pooled as the model pools it."""
  return pool_behaviours(history, tf.reduce_sum(tf.cast(mask, tf.int32), 1),
                         model.tower_behaviour_pooling)


def _din_logits(model, user, candidate, history, numeric, length, summary):
  """Logits [1, N] of one user's N candidates; `history` [1, W, Di] holds
  `length` valid behaviours first; `summary` [1, Di] is their pooled s."""
  most = model.spec.max_history
  block = -(-most // -(-most // BLOCK))   # ~BLOCK, tiling max_history evenly
  interest = pooled_in_blocks(model.attention, candidate, history, length,
                              block)
  return _tower(model, user, candidate, interest, numeric, summary)


def _dien_front(model, features, candidates) -> Dict[str, tf.Tensor]:
  """Embedding, interest extractor (once per user) and attention of DIEN:
  what the evolution GRU and the tower read, for B users at once."""
  user, candidate, history, mask, numeric = _embed(model, features, candidates)
  extractor = model.extractor.cell
  evolution = model.evolution.cell
  units = model.gru_units
  width = tf.shape(history)[1]
  steps = tf.reduce_max(tf.concat([tf.reduce_sum(tf.cast(mask, tf.int32), 1),
                                   [0]], 0))
  batch = tf.shape(history)[0]
  # Extractor: states [H, B] (feature-major, see `_recurrence`), inputs
  # (W e_t + b)^T [L, 3H, B].
  x = tf.transpose(_matmul(history, extractor.kernel) + extractor.bias,
                   [1, 2, 0])
  mask_t = tf.transpose(mask)                                     # [L, B]
  _, states = _recurrence(extractor, lambda t: x[t], steps,
                          tf.zeros(tf.stack([units, batch])),
                          mask_t[:, tf.newaxis], collect=width)  # [L, H, B]
  states = tf.where(mask_t[:, tf.newaxis], states, 0.0)
  states = tf.transpose(states, [2, 0, 1])                        # [B, L, H]
  if model.attention == "mlp":
    query_layer, query_act = model.attention_query.layers
    query = _activate(query_act, _matmul(candidate, query_layer.kernel)
                      + query_layer.bias)
    attention = attention_scores(model.attention_unit, query, states, mask)
  else:
    query = _matmul(candidate, tf.transpose(model.attention_kernel))
    logits = tf.matmul(query, states, transpose_b=True)           # [B, N, L]
    valid = tf.broadcast_to(mask[:, tf.newaxis], tf.shape(logits))
    attention = tf.nn.softmax(tf.where(valid, logits, -1e9), -1)
    attention = tf.where(valid, attention, 0.0)
  return dict(
      user=user, candidate=candidate, numeric=numeric, steps=steps,
      behaviour_sum=_behaviour_summary(model, history, mask),
      mask=mask_t[:, :, tf.newaxis, tf.newaxis],                  # [L, B, 1, 1]
      attention=tf.transpose(attention, [2, 0, 1])[:, :, tf.newaxis],  # [L, B, 1, N]
      # The evolution's input projection W h_t, once per user.
      projected=tf.transpose(_matmul(states, evolution.kernel),
                             [1, 0, 2])[..., tf.newaxis])        # [L, B, 3H, 1]


def _dien_evolve(model, projected, attention, mask, steps) -> tf.Tensor:
  """Final evolved states [B, H, n] of n candidates per user (attention
  [L, B, 1, n]); the states are [B, H, n] throughout."""
  evolution = model.evolution.cell
  bias = evolution.bias[:, tf.newaxis]
  if model.gru_type == "AIGRU":
    # Input a_t h_t: W (a_t h_t) + b = a_t (W h_t) + b, per candidate.
    inputs = lambda t: projected[t] * attention[t] + bias         # noqa: E731
    gates = None
  else:
    inputs = lambda t: projected[t] + bias                        # noqa: E731
    gates = attention
  shape = tf.stack([tf.shape(projected)[1], model.gru_units,
                    tf.shape(attention)[-1]])
  return _recurrence(evolution, inputs, steps, tf.zeros(shape), mask, gates)


# The evolution GRU runs as this many independent loops over groups of
# candidates, which TensorFlow runs side by side on the CPU's threads (a
# loop's steps are too small for two threads each; measured:
# docs/benchmarks.md).
EVOLUTION_GROUPS = 2


def _dien_probabilities(model, jit_compile: bool):
  """DIEN's probabilities(features, candidates) in three stages: front,
  evolution groups, tower; each compiled with XLA under `jit_compile`, so
  that the groups stay separate calls TensorFlow runs concurrently."""
  def compiled(fn):
    return tf.function(fn, jit_compile=True) if jit_compile else fn

  front = compiled(lambda f, c: _dien_front(model, f, c))
  evolve = compiled(lambda *args: _dien_evolve(model, *args))
  back = compiled(lambda user, candidate, final, numeric, behaviour_sum:
                  tf.sigmoid(_tower(model, user, candidate, final, numeric,
                                    behaviour_sum)))

  def probabilities(features, candidates):
    parts = front(features, candidates)
    num = tf.shape(parts["candidate"])[1]
    size = (num + EVOLUTION_GROUPS - 1) // EVOLUTION_GROUPS
    final = tf.concat([
        evolve(parts["projected"],
               parts["attention"][..., g * size:(g + 1) * size],
               parts["mask"], parts["steps"])
        for g in range(EVOLUTION_GROUPS)], -1)                    # [B, H, N]
    return back(parts["user"], parts["candidate"],
                tf.transpose(final, [0, 2, 1]), parts["numeric"],
                parts["behaviour_sum"])

  return probabilities


# --------------------------------------------------------------------------- #
# The scorer the export calls.
# --------------------------------------------------------------------------- #


def _bucket(size: tf.Tensor, minimum: int, exact: Optional[int] = None
            ) -> tf.Tensor:
  """The smallest power of two >= size (at least `minimum`), or `exact` when
  size <= exact < that power."""
  size = tf.maximum(tf.cast(size, tf.int32), minimum)
  power = tf.cast(2 ** tf.math.ceil(tf.math.log(tf.cast(size, tf.float32))
                                    / tf.math.log(2.0) - 1e-6), tf.int32)
  power = tf.maximum(power, size)
  if exact is not None:
    power = tf.where((size <= exact) & (exact < power), exact, power)
  return power


def _pad_to(t: tf.Tensor, axis: int, size: tf.Tensor) -> tf.Tensor:
  """Pads axis `axis` of t with zeros (padding index) up to `size`."""
  paddings = [[0, 0]] * t.shape.rank
  paddings[axis] = [0, size - tf.shape(t)[axis]]
  return tf.pad(t, paddings)


def _check_indices(spec: FeatureSpec, features: Dict[str, tf.Tensor],
                   candidates: Dict[str, tf.Tensor]) -> None:
  """Every index within its vocabulary (else InvalidArgumentError naming
  the input): XLA's gather would clamp an index out of range silently."""
  inputs = [(f.name, f) for f in spec.user_features]
  inputs += [(HISTORY_PREFIX + f.name, f) for f in spec.item_features]
  for name, feature in inputs + [(None, f) for f in spec.item_features]:
    ids = features[name] if name else candidates[feature.name]
    label = name or f"candidate {feature.name}"
    tf.debugging.assert_equal(
        tf.reduce_all((ids >= 0) & (ids < feature.vocab_size)), True,
        message=f"input {label} holds an index outside [0, "
        f"{feature.vocab_size}), the vocabulary of {feature.name}")


class Scorer:
  """`score_candidates` for an export: probabilities [B, N].

  Args:
    model: a `DINModel` or `DIENModel` (see `supports`).
    jit_compile: compile the numeric part with XLA, shapes padded to buckets.
  """

  def __init__(self, model, jit_compile: bool = False):
    if not supports(model):
      raise ValueError(f"{type(model).__name__} with this configuration is "
                       "not covered; use model.score_candidates")
    self.model = model
    self.jit_compile = jit_compile
    if model.__class__.__name__ != "DINModel":
      self._probabilities = _dien_probabilities(model, jit_compile)
      return

    def probabilities(features, candidates):
      user, candidate, history, mask, numeric = _embed(model, features,
                                                       candidates)
      lengths = tf.cast(features[HISTORY_LENGTH], tf.int32)
      summaries = _behaviour_summary(model, history, mask)

      def one_user(b):
        # Users one at a time: memory for one user's pairs, and the work
        # follows its own history (blocks up to its length).
        def row(t):   # [1, ...], of static size 1 (XLA) unlike t[b:b + 1]
          return tf.gather(t, b)[tf.newaxis]

        return _din_logits(model, row(user), row(candidate), row(history),
                           row(numeric), lengths[b], row(summaries))[0]

      return tf.sigmoid(tf.map_fn(
          one_user, tf.range(tf.shape(user)[0]),
          fn_output_signature=tf.TensorSpec([None], tf.float32)))

    self._probabilities = (tf.function(probabilities, jit_compile=True)
                           if jit_compile else probabilities)

  def __call__(self, features: Dict[str, tf.Tensor],
               candidates: Dict[str, tf.Tensor]) -> tf.Tensor:
    """features: user features, `hist_*` [B, H] and `hist_length` [B] (as
    `score_candidates_indices` takes them); candidates: item feature ->
    [B, N] indices."""
    spec = self.model.spec
    names = ([f.name for f in spec.user_features]
             + [HISTORY_PREFIX + f.name for f in spec.item_features]
             + [HISTORY_LENGTH] + list(spec.numeric_features))
    features = {k: features[k] for k in names}
    history = features[HISTORY_PREFIX + spec.item_id]
    lengths = tf.clip_by_value(features[HISTORY_LENGTH], 0,
                               tf.cast(tf.shape(history)[1], tf.int64))
    features[HISTORY_LENGTH] = lengths
    # Ids at padded positions are never looked up (as in the model).
    valid = tf.sequence_mask(lengths, tf.shape(history, out_type=tf.int64)[1])
    for f in spec.item_features:
      name = HISTORY_PREFIX + f.name
      features[name] = tf.where(valid, features[name],
                                tf.zeros([], features[name].dtype))
    _check_indices(spec, features, candidates)
    # Only the longest valid history of the batch matters.
    longest = tf.cast(tf.reduce_max(tf.concat([lengths, [0]], 0)), tf.int32)
    if not self.jit_compile:
      width = tf.maximum(longest, 1)
      for f in spec.item_features:
        name = HISTORY_PREFIX + f.name
        features[name] = _pad_to(features[name][:, :width], 1, width)
      return self._probabilities(features, candidates)
    batch = tf.shape(history)[0]
    num = tf.shape(candidates[spec.item_id])[1]
    width = _bucket(longest, 8, spec.max_history)
    rows, columns = _bucket(batch, 1), _bucket(num, 8)
    for name in names:
      value = features[name]
      if value.shape.rank == 2:      # hist_<item feature> [B, H]
        value = _pad_to(value[:, :width], 1, width)
      features[name] = _pad_to(value, 0, rows)
    candidates = {k: _pad_to(_pad_to(v, 1, columns), 0, rows)
                  for k, v in candidates.items()}
    return self._probabilities(features, candidates)[:batch, :num]
