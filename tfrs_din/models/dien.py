"""Deep Interest Evolution Network (Zhou et al., AAAI 2019)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import tensorflow as tf

from tfrs_din.features import NEGATIVE_PREFIX
from tfrs_din.layers.activation_unit import LocalActivationUnit
from tfrs_din.layers.attention_gru import InterestEvolution
from tfrs_din.layers.interest_extractor import InterestExtractor
from tfrs_din.layers.arrays import accepts_arrays
from tfrs_din.layers.mlp import make_activation
from tfrs_din.models.ctr_model import CTRModel
from tfrs_din.models.embedding import EmbeddedFeatures

_NEG_INF = -1e9
# Values of `DIENModel(attention_type=...)`.
ATTENTION_TYPES = ("mlp", "bilinear")
# Values of `DIENModel(attention_pooling_in_tower=...)`.
ATTENTION_POOLINGS = (None, "states", "behaviours", "din")


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
@accepts_arrays  # NumPy arrays and Python lists in the features dict
class DIENModel(CTRModel):
  """DIEN: interest extractor GRU, then attention-driven interest evolution.

      h_t   = GRU(e_t, h_{t-1})                           (interest extractor)
      a_t   = softmax_t(h_t W e_A)  over valid t           (attention to target)
      h'_T  = {AIGRU | AGRU | AUGRU}(h_t, a_t)             (interest evolving)
      tower([u ; e_A ; h'_T ; sum_t a_t e_t ; s ; e_A * s])
      loss  = logloss + alpha * L_aux (training only)      (see InterestExtractor)

  The attention above is the paper's (eq. 7, bilinear), `attention_type=
  "bilinear"`. The default, "mlp", is the official code's
  `din_fcn_attention`: q = PReLU(V e_A + c), then a_t = softmax_t(net([q,
  h_t, q - h_t, q * h_t])) with a sigmoid 80-40-1 net (DIN's local
  activation unit, normalised over the valid steps).

  The auxiliary loss needs sampled negatives `neg_hist_<item feature>` in the
  training batches; prediction and export need none.

  Args:
    gru_units: size of the interest states (36 in the official code).
    gru_type: "AUGRU_OFFICIAL" (the default: the official code's form, see
      `tfrs_din.layers.gru_equations`), "AUGRU" (the paper's), "AGRU" or
      "AIGRU".
    aux_loss_weight: alpha; 0 disables the auxiliary loss.
    aux_hidden_units: hidden sizes of the auxiliary net.
    aux_reduction: how the auxiliary loss is normalised, see
      `InterestExtractor`: "padded_mean" (the default, the official code's:
      over every position of a batch padded to `max_history`) or
      "step_mean" (over the valid steps).
    attention_type: "mlp" (the official code, the default) or "bilinear"
      (the paper's eq. 7).
    attention_units: hidden sizes of the "mlp" attention net (80, 40).
    behaviour_sum_in_tower: see `CTRModel`; on by default, as in the
      official code.
    tower_input_normalization: see `CTRModel`; "affine" by default, as the
      official code runs it.
    attention_pooling_in_tower: "behaviours" (the default), "states", "din"
      or None (the papers: h'_T alone): also feed the tower, beside the
      final evolved state h'_T, sum_t a_t e_t (the behaviours) or sum_t a_t
      h_t (the interest states), pooled by the attention that drives the
      evolution, or DIN's sum_t w(e_t, e_A) e_t (a separate local activation
      unit of `attention_units` with Dice, weights not normalised, as
      `DINModel`'s). The evolved state is a lossy summary of the history;
      the pooled behaviours give the tower DIN's direct read of the
      behaviours that match the candidate.
    **kwargs: see `CTRModel`.

  Example:

  >>> from tfrs_din.data.synthetic import SyntheticConfig, generate
  >>> data = generate(SyntheticConfig(num_users=50))
  >>> model = DIENModel(data.spec, gru_units=8)
  >>> model(data.features(slice(0, 4))).shape
  TensorShape([4])
  """

  def __init__(self, spec, gru_units: int = 36,
               gru_type: str = "AUGRU_OFFICIAL",
               aux_loss_weight: float = 1.0,
               aux_hidden_units: Sequence[int] = (100, 50),
               aux_reduction: str = "padded_mean",
               attention_type: str = "mlp",
               attention_units: Sequence[int] = (80, 40),
               behaviour_sum_in_tower: bool = True,
               tower_input_normalization: Optional[str] = "affine",
               attention_pooling_in_tower: Optional[str] = "behaviours",
               **kwargs):
    super().__init__(spec, behaviour_sum_in_tower=behaviour_sum_in_tower,
                     tower_input_normalization=tower_input_normalization,
                     **kwargs)
    if attention_type not in ATTENTION_TYPES:
      raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, "
                       f"got {attention_type!r}.")
    if attention_pooling_in_tower not in ATTENTION_POOLINGS:
      raise ValueError(f"attention_pooling_in_tower must be one of "
                       f"{ATTENTION_POOLINGS}, got "
                       f"{attention_pooling_in_tower!r}.")
    self.attention_pooling_in_tower = attention_pooling_in_tower
    self.gru_units = int(gru_units)
    self.gru_type = gru_type
    self.aux_loss_weight = float(aux_loss_weight)
    self.aux_hidden_units = tuple(aux_hidden_units)
    self.aux_reduction = aux_reduction
    self.attention_type = attention_type
    self.attention_units = tuple(attention_units)
    # "padded_mean" over max_history steps: the loss is the same whatever
    # width a batch is padded to (`InterestExtractor`).
    self.extractor = InterestExtractor(gru_units, aux_hidden_units,
                                       aux_reduction=aux_reduction,
                                       max_steps=spec.max_history,
                                       name="interest_extractor")
    self.evolution = InterestEvolution(gru_units, gru_type,
                                       name="interest_evolution")
    if attention_type == "bilinear":
      item_dim = sum(f.embedding_dim for f in spec.item_features)
      self.attention_kernel = self.add_weight(
          name="attention_kernel", shape=(self.gru_units, item_dim),
          initializer="glorot_uniform")
    else:
      kernel = tf.keras.initializers.serialize(self.kernel_initializer)
      self.attention_query = tf.keras.Sequential(
          [tf.keras.layers.Dense(self.gru_units, kernel_initializer=kernel),
           make_activation("prelu")], name="attention_query")
      self.attention_unit = LocalActivationUnit(
          self.attention_units, activation="sigmoid", normalization="softmax",
          kernel_initializer=kernel, name="attention_unit")
    if attention_pooling_in_tower == "din":
      self.behaviour_attention = LocalActivationUnit(
          self.attention_units, activation="dice",
          kernel_initializer=tf.keras.initializers.serialize(
              self.kernel_initializer),
          name="behaviour_attention")

  def attention_scores(self, states: tf.Tensor, candidate: tf.Tensor,
                       mask: tf.Tensor) -> tf.Tensor:
    """a [B, N, T]: attention of candidates [B, N, Di] to the states [B, T, H],
    a masked softmax over the valid steps (`attention_type` selects the
    score)."""
    if self.attention_type == "mlp":
      query = self.attention_query(candidate)                    # [B, N, H]
      _, weights = self.attention_unit(query, states, mask=mask,
                                       return_weights=True)
      return weights
    # (e_A W^T) first, as one 2-D matmul, then one batched product with h.
    query = tf.reshape(
        tf.matmul(tf.reshape(candidate, [-1, tf.shape(candidate)[-1]]),
                  self.attention_kernel, transpose_b=True),
        [tf.shape(candidate)[0], -1, self.gru_units])           # [B, N, H]
    query.set_shape(candidate.shape[:-1].concatenate([self.gru_units]))
    logits = tf.matmul(query, states, transpose_b=True)         # [B, N, T]
    mask = tf.broadcast_to(mask[:, tf.newaxis], tf.shape(logits))
    weights = tf.nn.softmax(tf.where(mask, logits, _NEG_INF), axis=-1)
    return weights * tf.cast(mask, weights.dtype)

  def interest(self, embedded: EmbeddedFeatures,
               training: Optional[bool] = None):
    states = self.extractor(embedded.history, embedded.mask, training=training)
    attention = self.attention_scores(states, embedded.candidate,
                                      embedded.mask)             # [B, N, T]
    # The evolution depends on the candidate: it runs for every (user,
    # candidate) pair; the extractor above ran once per user.
    final = self.evolution(states, attention, embedded.mask)    # [B, N, H']
    if self.attention_pooling_in_tower == "din":
      pooled = self.behaviour_attention(embedded.candidate,
                                        embedded.behaviours,
                                        training=training)       # [B, N, Di]
    else:
      pooled = self.attention_pooled(attention, states, embedded.history)
    if pooled is not None:
      final = tf.concat([final, pooled], -1)
    return final, {"attention": attention, "states": states}

  def attention_pooled(self, attention: tf.Tensor, states: tf.Tensor,
                       history: tf.Tensor) -> Optional[tf.Tensor]:
    """sum_t a_t x_t [B, N, X] of `attention_pooling_in_tower` "states" or
    "behaviours" (x_t the states [B, T, H] or the behaviours [B, T, Di]);
    None for the other values. a is zero at padded steps, so padding adds
    nothing to the sum."""
    if self.attention_pooling_in_tower not in ("states", "behaviours"):
      return None
    pooled = (states if self.attention_pooling_in_tower == "states"
              else history)
    return tf.matmul(attention, pooled)

  @property
  def has_auxiliary_loss(self) -> bool:
    return self.aux_loss_weight > 0.0

  def auxiliary_loss(self, features: Dict[str, tf.Tensor],
                     intermediates: Dict[str, tf.Tensor],
                     training: Optional[bool] = None) -> tf.Tensor:
    if self.aux_loss_weight == 0.0:
      return tf.constant(0.0)
    missing = [n for n in self.spec.negative_names() if n not in features]
    if missing:
      raise ValueError(
          f"DIEN's auxiliary loss needs sampled negatives, but the batch has no "
          f"{missing}; prepare data with auxiliary negatives or set "
          f"aux_loss_weight=0.")
    embedded = intermediates["embedded"]
    negatives, _ = self.embedder.embed_sequence(features, embedded.mask,
                                                NEGATIVE_PREFIX)
    loss = self.extractor.auxiliary_loss(
        intermediates["states"], embedded.history, negatives, embedded.mask,
        training=training)
    return self.aux_loss_weight * loss

  def attention_weights(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Attention a_t of each interest state to the example's candidate, [B, T]."""
    _, intermediates = self.forward(features, training=False)
    return intermediates["attention"][:, 0]

  def get_config(self) -> dict:
    return dict(super().get_config(),
                gru_units=self.gru_units,
                gru_type=self.gru_type, aux_loss_weight=self.aux_loss_weight,
                aux_hidden_units=self.aux_hidden_units,
                aux_reduction=self.aux_reduction,
                attention_type=self.attention_type,
                attention_units=self.attention_units,
                attention_pooling_in_tower=self.attention_pooling_in_tower)
