"""The common skeleton of BaseModel, DIN and DIEN as a TFRS ranking model."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import logging
from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_din.features import FeatureSpec
from tfrs_din.layers.arrays import accepts_arrays
from tfrs_din.layers.mlp import MLP
from tfrs_din.metrics.gauc import GAUC
from tfrs_din.ops import fused_kernels
from tfrs_din.models.embedding import (DEFAULT_EMBEDDINGS_INITIALIZER,
                                       EmbeddedFeatures, FeatureEmbedder)
from tfrs_din.optimizers import DEFAULT_ROW_L2_EVERY, LazyAdam
from tfrs_din.regularizers import (DENSE_L2_MAX_ROWS, default_l2,
                                   resolve_regularization)


# Values of `CTRModel(tower_input_normalization=...)`.
TOWER_INPUT_NORMALIZATIONS = (None, "batch", "affine")
BEHAVIOUR_POOLINGS = ("sum", "mean")


def _under_parameter_servers() -> bool:
  return isinstance(tf.distribute.get_strategy(),
                    tf.distribute.experimental.ParameterServerStrategy)


def pool_behaviours(behaviours: tf.Tensor, count: tf.Tensor,
                    pooling: str = "sum") -> tf.Tensor:
  """s = sum_j e_j over the valid behaviours ("sum"), or that sum / count
  ("mean"; 0 for an empty history). `behaviours` [B, L, Di] (zeros at padded
  positions) or ragged [B, (L), Di]; `count` [B], the valid behaviours."""
  total = tf.reduce_sum(behaviours, axis=1)                     # [B, Di]
  if pooling == "mean":
    total = tf.math.divide_no_nan(total, tf.cast(count, total.dtype)[:, None])
  return total


def behaviour_sum_features(embedded: EmbeddedFeatures, pooling: str = "sum"
                           ) -> List[tf.Tensor]:
  """[s, e_A * s] per candidate, each [B, N, Di]: the extra tower inputs of
  the official DIN/DIEN code (DIEN repository, script/model.py), where s is
  the sum of the valid behaviour embeddings; `pooling="mean"` divides it by
  their number (see `pool_behaviours`)."""
  total = pool_behaviours(embedded.behaviours,
                          embedded.behaviours.row_lengths(), pooling)
  total = tf.broadcast_to(total[:, tf.newaxis], tf.shape(embedded.candidate))
  return [total, embedded.candidate * total]


def _attach_row_l2(optimizer, l2: float) -> None:
  """Makes `optimizer` (a `LazyAdam`) apply the rows' L2 of "lazy_l2"."""
  if not isinstance(optimizer, LazyAdam):
    raise ValueError(
        "regularization='lazy_l2' (what 'auto' means for tables of more than "
        f"{DENSE_L2_MAX_ROWS:,} rows) is applied by tfrs_din.optimizers."
        f"LazyAdam; got optimizer {type(optimizer).__name__}. Compile with "
        "LazyAdam or build the model with regularization='l2' or 'mba'.")
  if optimizer.row_l2 not in (0.0, l2):
    raise ValueError(f"optimizer.row_l2={optimizer.row_l2} differs from the "
                     f"model's l2={l2} (regularization='lazy_l2').")
  optimizer.row_l2 = float(l2)


@accepts_arrays  # NumPy arrays and Python lists in the features dict
class CTRModel(tfrs.models.Model):
  """Embedding -> user interest -> MLP -> logit, trained by `tfrs.tasks.Ranking`.

      logit = MLP([user ; candidate ; interest(candidate, behaviours) ; numeric])
      loss  = logloss(label, sigmoid(logit)) + regularisation (+ extra terms)

  Under a `tf.distribute` strategy the log loss is averaged over the global
  batch and the batch-level terms are divided by the number of replicas, so
  the summed replica gradients equal those of one device on the same batch.

  Subclasses define `interest`. Every candidate tensor has shape [B, N, .]:
  N = 1 in training and plain prediction, N > 1 when one user's behaviours are
  scored against many candidates (`score_candidates`), so the user-side work
  is done once per user.

  The defaults are the model `tfrs-din train` ships: each was chosen on
  validation users of two Amazon logs (docs/design.md gives the reasons).

  Args:
    spec: the `FeatureSpec`.
    mlp_units: hidden sizes of the final tower (200, 80 in the papers).
    activation: activation of the tower, "dice" or "prelu" (or any Keras one).
    dropout: dropout rate in the tower (the paper's alternative to MBA).
    regularization: the embedding penalty. "l2": lambda/2 ||W||^2 over every
      row of every table at every step (O(rows) per step); "lazy_l2": the
      shrinkage Adam gives "l2" on rows that get no gradient, applied by
      `tfrs_din.optimizers.LazyAdam` every `DEFAULT_ROW_L2_EVERY` steps
      (O(batch) steps; compile with `LazyAdam`); "mba": DIN's mini-batch
      aware L2 on the batch's rows; None. "auto" (the default): "l2" for
      tables of at most `DENSE_L2_MAX_ROWS` rows in all, "lazy_l2" above.
    l2: lambda of the penalty; None: 1e-3 for "l2"/"lazy_l2", 0.01 for "mba".
    seed: seed of dropout.
    embeddings_initializer: initializer of the embedding tables, N(0, 0.05)
      by default.
    kernel_initializer: initializer of the dense kernels of the tower and of
      the attention nets; Glorot-normal by default (steadier across seeds
      than Glorot-uniform).
    behaviour_sum_in_tower: also feed the tower s, the pooled behaviour
      embeddings, and e_A * s (e_A: the candidate), as the official code
      does for DIN and DIEN (DIEN repository, script/model.py); a model whose
      interest is already s (the base model) adds only e_A * s.
    tower_behaviour_pooling: how s is pooled for the tower: "mean" (the
      default), the sum divided by the number of valid behaviours, whose
      scale does not grow with the history, or "sum" (the official code).
    tower_input_normalization: None (the papers), "batch" or "affine": a
      batch normalisation of the tower input, as both official codebases
      have (`build_fcn_net` in DIEN's script/model.py, the DIN repository's
      din/model.py). "batch" is Keras' BatchNormalization (batch statistics
      in training, moving statistics at inference). "affine" is what the
      official code actually runs: `tf.layers.batch_normalization` is called
      there without `training=True`, so it always normalises with its
      initial statistics (mean 0, variance 1) and learns only a per-feature
      scale and shift, y = gamma * x / sqrt(1 + 1e-3) + beta.
    gauc_in_training: also update and report GAUC at every training step.
      Off by default: GAUC is exact only over whole users, so its value is
      computed from every buffered impression, which makes each step's report
      cost O(examples seen so far). `evaluate` (and so fit's `val_gauc`)
      always reports it, computed once at the end.

  Attributes:
    use_fused_kernels: whether training and evaluation steps may run DIEN's
      recurrences with the fused C++ kernels (`tfrs_din.ops`; CPU only, never
      in exports). True by default; set before the first `fit`/`evaluate`.
  """

  use_fused_kernels: bool = True

  def __init__(self, spec: FeatureSpec, mlp_units: Sequence[int] = (200, 80),
               activation: str = "dice", dropout: float = 0.0,
               regularization: Optional[str] = "auto",
               l2: Optional[float] = None,
               seed: Optional[int] = None, gauc_in_training: bool = False,
               embeddings_initializer: Any = DEFAULT_EMBEDDINGS_INITIALIZER,
               kernel_initializer: Any = "glorot_normal",
               behaviour_sum_in_tower: bool = False,
               tower_input_normalization: Optional[str] = None,
               tower_behaviour_pooling: str = "mean", **kwargs):
    super().__init__(**kwargs)
    if tower_behaviour_pooling not in BEHAVIOUR_POOLINGS:
      raise ValueError(
          f"tower_behaviour_pooling must be one of {BEHAVIOUR_POOLINGS}, "
          f"got {tower_behaviour_pooling!r}.")
    self.tower_behaviour_pooling = tower_behaviour_pooling
    if tower_input_normalization not in TOWER_INPUT_NORMALIZATIONS:
      raise ValueError(
          f"tower_input_normalization must be one of "
          f"{TOWER_INPUT_NORMALIZATIONS}, got {tower_input_normalization!r}.")
    self.tower_input_normalization = tower_input_normalization
    self.tower_norm = (
        None if tower_input_normalization is None else
        tf.keras.layers.BatchNormalization(epsilon=1e-3, name="tower_norm"))
    self.behaviour_sum_in_tower = bool(behaviour_sum_in_tower)
    self.spec = spec
    self.mlp_units = tuple(mlp_units)
    self.activation = activation
    self.dropout = dropout
    rows = sum(f.vocab_size for f in spec.user_features + spec.item_features)
    if regularization == "l2" and rows > DENSE_L2_MAX_ROWS:
      logging.warning(
          "regularization='l2' penalises all %s embedding rows at every step, "
          "a cost that grows with the tables; for tables this large "
          "regularization='lazy_l2' (what 'auto' takes) keeps the step "
          "O(batch), with one pass over the tables every %d steps.",
          f"{rows:,}", DEFAULT_ROW_L2_EVERY)
    # Stored resolved: the config says what the model trains with.
    self.regularization = resolve_regularization(regularization, rows)
    self.l2 = default_l2(self.regularization) if l2 is None else float(l2)
    self.seed = seed
    self.gauc_in_training = gauc_in_training
    self.embedder = FeatureEmbedder(
        spec, self.regularization, self.l2,
        embeddings_initializer=embeddings_initializer, name="embedder")
    self.embeddings_initializer = self.embedder.embeddings_initializer
    self.tower = MLP(self.mlp_units, activation=activation, dropout=dropout,
                     output_units=1, seed=seed,
                     kernel_initializer=kernel_initializer, name="tower")
    self.kernel_initializer = self.tower.kernel_initializer
    # Per-example loss, averaged over the *global* batch in `compute_loss`, so
    # that gradients summed over replicas equal single-device gradients.
    self.task = tfrs.tasks.Ranking(
        loss=tf.keras.losses.BinaryCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
        metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc"),
                 tf.keras.metrics.BinaryCrossentropy(from_logits=True,
                                                     name="logloss")])
    # Variable-length buffers cannot live on parameter servers; there GAUC is
    # computed by `tfrs_din.training.evaluate` on the host instead.
    self.gauc = None if _under_parameter_servers() else GAUC(name="gauc")

  # To be defined by subclasses ----------------------------------------------
  def interest(self, embedded: EmbeddedFeatures, training: Optional[bool] = None
               ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Returns the user-interest vector [B, N, X] and named intermediates."""
    raise NotImplementedError

  def extra_tower_inputs(self, embedded: EmbeddedFeatures) -> List[tf.Tensor]:
    """More [B, N, .] inputs of the tower: see `behaviour_sum_in_tower`."""
    return (behaviour_sum_features(embedded, self.tower_behaviour_pooling)
            if self.behaviour_sum_in_tower else [])

  def auxiliary_loss(self, features: Dict[str, tf.Tensor],
                     intermediates: Dict[str, tf.Tensor],
                     training: Optional[bool] = None) -> tf.Tensor:
    """Extra training loss (DIEN's); 0 by default."""
    del features, intermediates, training
    return tf.constant(0.0)

  # Forward passes -------------------------------------------------------------
  def forward(self, features: Dict[str, tf.Tensor],
              candidates: Optional[Dict[str, tf.Tensor]] = None,
              training: Optional[bool] = None
              ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Logits [B, N] and intermediates for [B, N] candidates (default N = 1)."""
    embedded = self.embedder(features, candidates)
    interest, intermediates = self.interest(embedded, training=training)
    num = tf.shape(embedded.candidate)[1]

    def per_candidate(t):  # [B, X] -> [B, N, X]
      return tf.repeat(tf.expand_dims(t, 1), num, axis=1)

    tower_input = tf.concat([per_candidate(embedded.user), embedded.candidate,
                             interest, per_candidate(embedded.numeric),
                             *self.extra_tower_inputs(embedded)], -1)
    if self.tower_norm is not None:
      tower_input = self.tower_norm(
          tower_input,
          training=training if self.tower_input_normalization == "batch"
          else False)
    logits = tf.squeeze(self.tower(tower_input, training=training), -1)
    intermediates["embedded"] = embedded
    return logits, intermediates

  def call(self, features: Dict[str, tf.Tensor], training: Optional[bool] = None
           ) -> tf.Tensor:
    """Click probability of each example's candidate, [B]."""
    logits, _ = self.forward(features, training=training)
    return tf.sigmoid(logits[:, 0])

  def score_candidates(self, features: Dict[str, tf.Tensor],
                       candidates: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Click probabilities [B, N] of N candidates per user, user work done once.

    Args:
      features: user features and behaviours of B users (candidate features,
        if present, are ignored).
      candidates: each item feature's ids, [B, N].
    """
    logits, _ = self.forward(features, candidates, training=False)
    return tf.sigmoid(logits)

  def loss_terms(self, features: Dict[str, tf.Tensor],
                 training: bool = False) -> Dict[str, tf.Tensor]:
    """The terms of the training objective on a batch, each a scalar.

    Returns "logloss" (mean cross-entropy of the targets), the embedding
    penalty under the regulariser's name ("mba_loss" or "l2_loss"; absent
    without one) and, for models with an auxiliary loss in training,
    "aux_loss" (already multiplied by its weight). Under a `tf.distribute`
    strategy each term is this replica's share: summed over replicas they
    give the global batch's value (see `compute_loss`).
    """
    labels = tf.cast(features[self.spec.label], tf.float32)
    logits, intermediates = self.forward(features, training=training)
    logits = tf.squeeze(logits, 1)
    # [B, 1]: Keras' cross-entropy averages over the last axis.
    per_example = self.task(labels=tf.expand_dims(labels, 1),
                            predictions=tf.expand_dims(logits, 1),
                            training=training)
    if self._tracks_gauc(training):
      self.gauc.update_state(features[self.spec.group_key], labels, logits)
    # Batch-level terms: each replica contributes 1/replicas of them.
    terms = {"logloss": tf.nn.compute_average_loss(per_example)}
    if self._penalty_name:
      terms[self._penalty_name] = tf.nn.scale_regularization_loss(
          self.embedder.penalty(features))
    if training and self.has_auxiliary_loss:
      terms["aux_loss"] = tf.nn.scale_regularization_loss(
          self.auxiliary_loss(features, intermediates, training=training))
    return terms

  def compute_loss(self, features: Dict[str, tf.Tensor],
                   training: bool = False) -> tf.Tensor:
    """logloss + embedding penalty (+ auxiliary loss in training)."""
    return tf.add_n(list(self.loss_terms(features, training).values()))

  @property
  def has_auxiliary_loss(self) -> bool:
    """Whether `auxiliary_loss` adds a term in training (DIEN's)."""
    return False

  @property
  def _penalty_name(self) -> Optional[str]:
    """Log name of the embedding penalty ("mba_loss", "l2_loss" or None)."""
    regularization = self.embedder.regularization
    if regularization in (None, "lazy_l2"):  # lazy_l2: no loss term
      return None
    return f"{regularization}_loss"

  # Training and evaluation steps ---------------------------------------------
  def _tracks_gauc(self, training: bool) -> bool:
    return (self.gauc is not None and self.spec.group_key is not None
            and (not training or self.gauc_in_training))

  def _regularization_loss(self) -> tf.Tensor:
    return tf.reduce_sum([tf.reduce_sum(term) for term in self.losses])

  def compile(self, *args, **kwargs):
    """Keras' `compile`; also creates the epoch-mean trackers of the loss
    terms (under the strategy scope `compile` is called in). With
    `regularization="lazy_l2"` the optimizer must be `LazyAdam`; its
    `row_l2` is set to this model's `l2`."""
    super().compile(*args, **kwargs)
    if self.regularization == "lazy_l2":
      _attach_row_l2(self.optimizer, self.l2)
    names = ["loss"]
    if self._penalty_name:
      names.append(self._penalty_name)
    if self.has_auxiliary_loss:
      names.append("aux_loss")
    # Kept out of Keras' attribute tracking: `metrics` lists them once.
    self.__dict__["_loss_trackers"] = {
        name: tf.keras.metrics.Mean(name=name) for name in names}

  @property
  def metrics(self):
    trackers = list(self.__dict__.get("_loss_trackers", {}).values())
    return super().metrics + trackers

  def _step_logs(self, terms: Dict[str, tf.Tensor], total_loss: tf.Tensor,
                 training: bool) -> Dict[str, tf.Tensor]:
    """Epoch means of the loss and of each of its terms, and the metrics.

    "loss" is the whole objective (what the optimiser minimises: the terms of
    `loss_terms` plus any Keras layer losses); "logloss" is the task's metric;
    the penalty and auxiliary loss are logged under their own names. GAUC is
    left out of per-step logs unless it is tracked in training.
    """
    values = dict(terms, loss=total_loss)
    # Each replica holds its share of every term; scaled back, the mean over
    # replicas is the global value (equal per-replica batches).
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    trackers = self.__dict__.get("_loss_trackers", {})
    for name, tracker in trackers.items():
      if name in values:
        tracker.update_state(values[name] * replicas)
    # A term absent from these steps (DIEN's auxiliary loss in evaluation,
    # which has no negatives) is left out rather than logged as 0.
    absent = {id(t) for n, t in trackers.items() if n not in values}
    return {m.name: m.result() for m in self.metrics
            if id(m) not in absent
            and (m is not self.gauc or (training and self._tracks_gauc(True)))}

  def train_step(self, inputs):
    """`tfrs.models.Model.train_step`, logging epoch means of each loss term.

    Recurrences use the fused CPU kernels here (`tfrs_din.ops`).
    """
    with fused_kernels(self.use_fused_kernels), tf.GradientTape() as tape:
      terms = self.loss_terms(inputs, training=True)
      total_loss = tf.add_n(list(terms.values())) + self._regularization_loss()
    gradients = tape.gradient(total_loss, self.trainable_variables)
    self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
    return self._step_logs(terms, total_loss, training=True)

  def test_step(self, inputs):
    with fused_kernels(self.use_fused_kernels):
      terms = self.loss_terms(inputs, training=False)
    total_loss = tf.add_n(list(terms.values())) + self._regularization_loss()
    return self._step_logs(terms, total_loss, training=False)

  def evaluate(self, *args, return_dict: bool = False, **kwargs):
    """Keras' `evaluate`, with GAUC computed once over all batches at the end."""
    logs = super().evaluate(*args, return_dict=True, **kwargs)
    if self._tracks_gauc(False):
      logs["gauc"] = float(self.gauc.result())
    if return_dict:
      return logs
    # Keras' order: metrics_names first, then the other keys sorted.
    names = [n for n in self.metrics_names if n in logs]
    results = [logs[n] for n in names + sorted(set(logs) - set(names))]
    return results[0] if len(results) == 1 else results

  # Saving --------------------------------------------------------------------
  def get_config(self) -> dict:
    return dict(spec=self.spec.to_dict(), mlp_units=self.mlp_units,
                activation=self.activation, dropout=self.dropout,
                regularization=self.regularization, l2=self.l2, seed=self.seed,
                gauc_in_training=self.gauc_in_training,
                embeddings_initializer=tf.keras.initializers.serialize(
                    self.embeddings_initializer),
                kernel_initializer=tf.keras.initializers.serialize(
                    self.kernel_initializer),
                behaviour_sum_in_tower=self.behaviour_sum_in_tower,
                tower_behaviour_pooling=self.tower_behaviour_pooling,
                tower_input_normalization=self.tower_input_normalization,
                name=self.name)

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["spec"] = FeatureSpec.from_dict(config["spec"])
    return cls(**config)

  def get_build_config(self) -> dict:
    return {"built": True}

  def build_from_config(self, config) -> None:
    """Creates every variable by running the model once on a dummy batch."""
    del config
    self.build_all()

  def build_all(self) -> None:
    """Creates all variables, training-only ones included (for loading)."""
    features = self.spec.dummy_features()
    _, intermediates = self.forward(features, training=False)
    self.auxiliary_loss(features, intermediates, training=False)
    self.built = True
