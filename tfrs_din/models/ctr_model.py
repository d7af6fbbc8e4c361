"""The common skeleton of BaseModel, DIN and DIEN as a TFRS ranking model."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_din.features import FeatureSpec
from tfrs_din.layers.mlp import MLP
from tfrs_din.metrics.gauc import GAUC
from tfrs_din.ops import fused_kernels
from tfrs_din.models.embedding import EmbeddedFeatures, FeatureEmbedder


def _under_parameter_servers() -> bool:
  return isinstance(tf.distribute.get_strategy(),
                    tf.distribute.experimental.ParameterServerStrategy)


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

  Args:
    spec: the `FeatureSpec`.
    mlp_units: hidden sizes of the final tower (200, 80 in the papers).
    activation: activation of the tower, "dice" or "prelu" (or any Keras one).
    dropout: dropout rate in the tower (the paper's alternative to MBA).
    regularization: None, "mba" or "l2" on the embedding tables.
    l2: lambda of the regularisation.
    seed: seed of dropout.
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
               regularization: Optional[str] = "mba", l2: float = 0.01,
               seed: Optional[int] = None, gauc_in_training: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    self.spec = spec
    self.mlp_units = tuple(mlp_units)
    self.activation = activation
    self.dropout = dropout
    self.regularization = regularization
    self.l2 = l2
    self.seed = seed
    self.gauc_in_training = gauc_in_training
    self.embedder = FeatureEmbedder(spec, regularization, l2, name="embedder")
    self.tower = MLP(self.mlp_units, activation=activation, dropout=dropout,
                     output_units=1, seed=seed, name="tower")
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
                             interest, per_candidate(embedded.numeric)], -1)
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

  def compute_loss(self, features: Dict[str, tf.Tensor],
                   training: bool = False) -> tf.Tensor:
    labels = tf.cast(features[self.spec.label], tf.float32)
    logits, intermediates = self.forward(features, training=training)
    logits = tf.squeeze(logits, 1)
    # [B, 1]: Keras' cross-entropy averages over the last axis.
    per_example = self.task(labels=tf.expand_dims(labels, 1),
                            predictions=tf.expand_dims(logits, 1),
                            training=training)
    if self._tracks_gauc(training):
      self.gauc.update_state(features[self.spec.group_key], labels, logits)
    loss = tf.nn.compute_average_loss(per_example)
    extra = self.embedder.penalty(features)
    if training:
      extra += self.auxiliary_loss(features, intermediates, training=training)
    # Batch-level terms: each replica contributes 1/replicas of them.
    return loss + tf.nn.scale_regularization_loss(extra)

  # Training and evaluation steps ---------------------------------------------
  def _tracks_gauc(self, training: bool) -> bool:
    return (self.gauc is not None and self.spec.group_key is not None
            and (not training or self.gauc_in_training))

  def _regularization_loss(self) -> tf.Tensor:
    return tf.reduce_sum([tf.reduce_sum(term) for term in self.losses])

  def _step_logs(self, loss: tf.Tensor, regularization_loss: tf.Tensor,
                 training: bool) -> Dict[str, tf.Tensor]:
    """TFRS's step logs, leaving out GAUC unless it is reported every step."""
    logs = {m.name: m.result() for m in self.metrics
            if m is not self.gauc or (training and self._tracks_gauc(True))}
    logs.update(loss=loss, regularization_loss=regularization_loss,
                total_loss=loss + regularization_loss)
    return logs

  def train_step(self, inputs):
    """`tfrs.models.Model.train_step`, with GAUC left out of per-step logs.

    Recurrences use the fused CPU kernels here (`tfrs_din.ops`).
    """
    with fused_kernels(self.use_fused_kernels), tf.GradientTape() as tape:
      loss = self.compute_loss(inputs, training=True)
      regularization_loss = self._regularization_loss()
      total_loss = loss + regularization_loss
    gradients = tape.gradient(total_loss, self.trainable_variables)
    self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
    return self._step_logs(loss, regularization_loss, training=True)

  def test_step(self, inputs):
    with fused_kernels(self.use_fused_kernels):
      loss = self.compute_loss(inputs, training=False)
    return self._step_logs(loss, self._regularization_loss(), training=False)

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
                gauc_in_training=self.gauc_in_training, name=self.name)

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
