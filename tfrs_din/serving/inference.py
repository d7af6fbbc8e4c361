"""The exports' `score_candidates`: the model's probabilities, computed faster.

`CTRModel.score_candidates` is written for training (valid pairs gathered
into ragged layouts, Dice as batch-normalise-then-gate, the tower input
concatenated). At inference every normalisation is a per-channel affine map
with constants, so this module computes the same probabilities from the same
variables with fewer and larger kernels, through the layers' public
inference forms (`MLP.inference_layers`, `LocalActivationUnit.
inference_scores`, `tfrs_din.layers.gru_equations`):

* DIN's activation unit (`LocalActivationUnit.inference_scores`). The first
  dense layer over [q, k, q - k, q * k] is
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
  product, saves one element-wise pass without XLA; it gave no gain beyond
  the noise, so it is not done.)
* The tower's first layer is split by input block: the user, numeric and
  behaviour-sum blocks (and the base model's pooled interest) once per user;
  the candidate block and the candidate * behaviour-sum block as one
  per-user matrix W_c + diag(s) W_cs; a tower-input normalisation folds into
  it.
* DIEN's interest extractor runs once per user, its input projection once per
  user; the evolution GRU runs over [B, N] rows at once, its input
  projection shared by the N candidates (AGRU/AUGRU forms); each step is
  `gru_equations.step`.

DIN scores users one at a time (a loop over the batch): memory holds one
user's pairs, and each user's work follows its own history, `BLOCK`
behaviours at a time ([N, BLOCK * H] intermediates that stay in cache),
accumulating the attention-weighted sum (online for a softmax); under XLA
(static shapes) the block loop still stops at the user's length. DIEN runs
its evolution GRU as `EVOLUTION_GROUPS` independent loops over groups of
candidates, separate calls that TensorFlow runs side by side (one loop's
steps are too small to share between threads).

`supports(model)` says whether a model's configuration is covered (base,
DIN and DIEN models in float32, every option); others (e.g. mixed precision)
use `model.score_candidates`.
`Scorer(jit_compile=True)` compiles the numeric part with XLA; shapes are then
padded to buckets (powers of two, or `max_history` for histories) so that a
server compiles a handful of programs, not one per request shape.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import tensorflow as tf

from tfrs_din.features import HISTORY_LENGTH, HISTORY_PREFIX, FeatureSpec
from tfrs_din.layers import gru_equations
from tfrs_din.layers.mlp import batch_norm_affine, dense_product
from tfrs_din.models.ctr_model import pool_behaviours

# Prefix of the candidates' inputs in the export's signatures
# (`candidate_<item feature>`); error messages name the inputs this way.
CANDIDATE_PREFIX = "candidate_"

# --------------------------------------------------------------------------- #
# DIN's activation unit over dense histories.
# --------------------------------------------------------------------------- #


def attention_scores(unit, query: tf.Tensor, keys: tf.Tensor,
                     mask: tf.Tensor) -> tf.Tensor:
  """Weights [B, N, L] of a `LocalActivationUnit` for query [B, N, D] and
  keys [B, L, D] (mask [B, L]); exactly 0 at padded positions."""
  scores = unit.inference_scores(query, keys)
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
    scores = unit.inference_scores(query, k)                     # [1, N, K]
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


def _recurrence(cell, inputs: Callable[[tf.Tensor], tf.Tensor], steps,
                state: tf.Tensor, mask: tf.Tensor,
                attention: Optional[tf.Tensor] = None,
                collect: Optional[int] = None):
  """Runs `cell`'s equations for `steps` steps from `state` [..., H, R].

  Feature-major layout: the R rows (users, or one user's candidates) are the
  last axis, so every gate is a contiguous block of rows of the recurrent
  product U^T h [..., 3H, R]. (Row-major [R, 3H] slices into gates inside
  the step's fused loop, which XLA's CPU backend runs slower.) Each step is
  `gru_equations.step` with the cell's gate.

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
  kernel = tf.transpose(cell.recurrent_kernel)                   # [3H, H]
  bias = cell.recurrent_bias[:, tf.newaxis]                      # [3H, 1]
  gate = cell.gate

  def body(t, h, out):
    p = tf.matmul(kernel, h) + bias                              # [..., 3H, R]
    new = gru_equations.step(gate, inputs(t), p, h,
                             None if attention is None else attention[t],
                             axis=-2)
    h = tf.where(mask[t], new, h)
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


def _model_classes():
  from tfrs_din.models.base_model import BaseModel  # pylint: disable=g-import-not-at-top
  from tfrs_din.models.dien import DIENModel  # pylint: disable=g-import-not-at-top
  from tfrs_din.models.din import DINModel  # pylint: disable=g-import-not-at-top
  return BaseModel, DINModel, DIENModel


def supports(model) -> bool:
  """Whether `Scorer` covers this model's configuration (else the export uses
  `model.score_candidates`): a `BaseModel`, `DINModel` or `DIENModel` (any
  of their options) computing in float32."""
  if type(model) not in _model_classes():  # pylint: disable=unidiomatic-typecheck
    return False
  if model.compute_dtype != "float32":
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


def _tower(model, user, candidate, interest, numeric, summary):
  """Logits [B, N] of the tower over [user ; candidate ; interest ; numeric
  (; s) (; candidate * s)], its first layer split by input block.

  `interest` is [B, N, X] (one per candidate: DIN, DIEN) or [B, X] (one per
  user: the base model, whose tower input has no s block); `summary` is
  s [B, Di]. The user, numeric, s (and per-user interest) blocks are one
  product per user; the candidate and candidate * s blocks one per-user
  matrix W_c + diag(s) W_cs; a tower-input normalisation is folded into the
  first layer (`MLP.inference_layers`).
  """
  norm = model.tower_norm
  affine = batch_norm_affine(norm) if norm is not None else (None, None)
  layers = model.tower.inference_layers(*affine)
  first = layers[0]
  per_user_interest = interest.shape.rank == 2
  dim = int(candidate.shape[-1])
  names = ["user", "candidate", "interest", "numeric"]
  widths = [int(user.shape[-1]), dim, int(interest.shape[-1]),
            int(numeric.shape[-1])]
  if model.behaviour_sum_in_tower:
    if not per_user_interest:
      names.append("summary")
      widths.append(dim)
    names.append("product")
    widths.append(dim)
  parts = dict(zip(names, tf.split(first.kernel, widths, axis=0)))
  per_user = (tf.matmul(user, parts["user"])
              + tf.matmul(numeric, parts["numeric"]) + first.bias)  # [B, H]
  batch = tf.shape(user)[0]
  per_candidate = tf.broadcast_to(parts["candidate"], tf.concat(
      [[batch], tf.shape(parts["candidate"])], 0))               # [B, Di, H]
  if "summary" in parts:
    per_user += tf.matmul(summary, parts["summary"])
  if "product" in parts:
    per_candidate = per_candidate + summary[:, :, tf.newaxis] * parts["product"]
  if per_user_interest:
    per_user += tf.matmul(interest, parts["interest"])
    z = tf.matmul(candidate, per_candidate) + per_user[:, tf.newaxis]
  else:
    matrices = tf.concat([per_candidate, tf.broadcast_to(
        parts["interest"], tf.concat([[batch], tf.shape(parts["interest"])],
                                     0))], 1)
    z = (tf.matmul(tf.concat([candidate, interest], -1), matrices)
         + per_user[:, tf.newaxis])                              # [B, N, H]
  x = first.activate(z)
  for layer in layers[1:]:
    x = layer(x)
  return tf.squeeze(x, -1)


# DIN scores a user's behaviours this many at a time (`pooled_in_blocks`):
# [N, BLOCK * 80] intermediates stay in the CPU's cache.
BLOCK = 16


def _pooled(history, mask, pooling: str):
  """The behaviours `history` [B, W, Di] (zeros where `mask` is False)
  pooled as `pool_behaviours` pools them ("sum" or "mean")."""
  return pool_behaviours(history, tf.reduce_sum(tf.cast(mask, tf.int32), 1),
                         pooling)


def _base_probabilities(model):
  """The base model's probabilities(features, candidates): its interest is
  the pooled history, one per user."""
  def probabilities(features, candidates):
    user, candidate, history, mask, numeric = _embed(model, features,
                                                     candidates)
    interest = _pooled(history, mask, model.pooling)
    summary = _pooled(history, mask, model.tower_behaviour_pooling)
    return tf.sigmoid(_tower(model, user, candidate, interest, numeric,
                             summary))
  return probabilities


def _din_logits(model, user, candidate, history, numeric, length, summary):
  """Logits [1, N] of one user's N candidates; `history` [1, W, Di] holds
  `length` valid behaviours first; `summary` [1, Di] is their pooled s."""
  most = model.spec.max_history
  block = -(-most // -(-most // BLOCK))   # ~BLOCK, tiling max_history evenly
  interest = pooled_in_blocks(model.attention, candidate, history, length,
                              block)
  return _tower(model, user, candidate, interest, numeric, summary)


def _din_probabilities(model):
  """DIN's probabilities(features, candidates), one user at a time: memory
  holds one user's pairs, and the work follows its own history (blocks up to
  its length)."""
  def probabilities(features, candidates):
    user, candidate, history, mask, numeric = _embed(model, features,
                                                     candidates)
    lengths = tf.cast(features[HISTORY_LENGTH], tf.int32)
    summaries = _pooled(history, mask, model.tower_behaviour_pooling)

    def one_user(b):
      def row(t):   # [1, ...], of static size 1 (XLA) unlike t[b:b + 1]
        return tf.gather(t, b)[tf.newaxis]

      return _din_logits(model, row(user), row(candidate), row(history),
                         row(numeric), lengths[b], row(summaries))[0]

    return tf.sigmoid(tf.map_fn(
        one_user, tf.range(tf.shape(user)[0]),
        fn_output_signature=tf.TensorSpec([None], tf.float32)))
  return probabilities


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
  x = tf.transpose(dense_product(history, extractor.kernel) + extractor.bias,
                   [1, 2, 0])
  mask_t = tf.transpose(mask)                                     # [L, B]
  _, states = _recurrence(extractor, lambda t: x[t], steps,
                          tf.zeros(tf.stack([units, batch])),
                          mask_t[:, tf.newaxis], collect=width)  # [L, H, B]
  states = tf.where(mask_t[:, tf.newaxis], states, 0.0)
  states = tf.transpose(states, [2, 0, 1])                        # [B, L, H]
  if model.attention_type == "mlp":
    query = model.attention_query(candidate, training=False)     # [B, N, H]
    attention = attention_scores(model.attention_unit, query, states, mask)
  else:
    attention = model.attention_scores(states, candidate, mask)  # [B, N, L]
  if model.attention_pooling_in_tower == "din":
    pooled = tf.matmul(attention_scores(model.behaviour_attention, candidate,
                                        history, mask), history)  # [B, N, Di]
  else:
    pooled = model.attention_pooled(attention, states, history)  # [B, N, X]
  return dict(
      user=user, candidate=candidate, numeric=numeric, steps=steps,
      summary=_pooled(history, mask, model.tower_behaviour_pooling),
      pooled=(tf.zeros(tf.concat([tf.shape(attention)[:2], [0]], 0))
              if pooled is None else pooled),
      mask=mask_t[:, :, tf.newaxis, tf.newaxis],                  # [L, B, 1, 1]
      attention=tf.transpose(attention, [2, 0, 1])[:, :, tf.newaxis],  # [L, B, 1, N]
      # The evolution's input projection W h_t, once per user.
      projected=tf.transpose(dense_product(states, evolution.kernel),
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
# loop's steps are too small to split over threads).
EVOLUTION_GROUPS = 2


def _dien_probabilities(model, jit_compile: bool):
  """DIEN's probabilities(features, candidates) in three stages: front,
  evolution groups, tower. Under `jit_compile` the front and the tower are
  compiled with XLA; the evolution loops are not: XLA runs each loop on one
  thread and its CPU loop is slower than TensorFlow's own, which also runs
  the groups side by side."""
  def compiled(fn):
    return tf.function(fn, jit_compile=True) if jit_compile else fn

  front = compiled(lambda f, c: _dien_front(model, f, c))
  back = compiled(lambda user, candidate, final, numeric, summary:
                  tf.sigmoid(_tower(model, user, candidate, final, numeric,
                                    summary)))

  def probabilities(features, candidates):
    parts = front(features, candidates)
    num = tf.shape(parts["candidate"])[1]
    size = (num + EVOLUTION_GROUPS - 1) // EVOLUTION_GROUPS
    final = tf.concat([
        _dien_evolve(model, parts["projected"],
                     parts["attention"][..., g * size:(g + 1) * size],
                     parts["mask"], parts["steps"])
        for g in range(EVOLUTION_GROUPS)], -1)                    # [B, H, N]
    interest = tf.concat([tf.transpose(final, [0, 2, 1]), parts["pooled"]],
                         -1)
    return back(parts["user"], parts["candidate"], interest, parts["numeric"],
                parts["summary"])

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
  inputs = [(f.name, features[f.name], f) for f in spec.user_features]
  inputs += [(HISTORY_PREFIX + f.name, features[HISTORY_PREFIX + f.name], f)
             for f in spec.item_features]
  inputs += [(CANDIDATE_PREFIX + f.name, candidates[f.name], f)
             for f in spec.item_features]
  for name, ids, feature in inputs:
    tf.debugging.Assert(
        tf.reduce_all((ids >= 0) & (ids < feature.vocab_size)),
        [f"{name}: expected indices in [0, {feature.vocab_size}) (the "
         f"vocabulary of {feature.name}), got an index outside it"])


class Scorer:
  """`score_candidates` for an export: probabilities [B, N].

  Args:
    model: a `BaseModel`, `DINModel` or `DIENModel` (see `supports`).
    jit_compile: compile the numeric part with XLA, shapes padded to buckets.
  """

  def __init__(self, model, jit_compile: bool = False):
    if not supports(model):
      raise ValueError(f"{type(model).__name__} with this configuration is "
                       "not covered; use model.score_candidates")
    self.model = model
    self.jit_compile = jit_compile
    base, din, _ = _model_classes()
    if not isinstance(model, (base, din)):
      self._probabilities = _dien_probabilities(model, jit_compile)
      return
    probabilities = (_base_probabilities(model) if isinstance(model, base)
                     else _din_probabilities(model))
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
