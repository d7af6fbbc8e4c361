"""Training, evaluation and loading of models on a prepared data directory."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrs_din.data.negatives import FreshNegatives
from tfrs_din.data.pipeline import (DEFAULT_SHUFFLE_BUFFER, in_holdout,
                                    check_shuffle_buffer, load_feature_spec,
                                    make_dataset)
from tfrs_din.data.sample_counts import count_samples, with_frequencies
from tfrs_din.training.distribute import make_strategy
from tfrs_din.training.optimizers import DEFAULT_ROW_L2_EVERY
from tfrs_din.features import FeatureSpec
from tfrs_din.metrics.gauc import grouped_auc
from tfrs_din.metrics.rela_impr import rela_impr
from tfrs_din.models import MODELS, CTRModel

MODEL_FILE = "model.keras"
CONFIG_FILE = "train_config.json"
SELECTION_FILE = "selection.json"  # the chosen epoch, until the refit ends


@dataclasses.dataclass
class TrainConfig:
  """Options of a training run; defaults follow the papers' official code.

  `model` is "base", "din" or "dien"; the other fields map to the model
  arguments of `tfrs_din.models` (only those of the chosen model are used).

  The schedule is chosen on a validation split, never on the test split.
  `validation` says which: "users" holds out `validation_fraction` of the
  training users (whole users, by a seeded hash), the analogue of the
  labelled protocol's test split of other users; "last" holds out every
  user's last training target, the analogue of the `next_item` protocol's
  test split (each user's last behaviour); "auto" picks "last" for data
  prepared with `--protocol next_item` and "users" otherwise. "users" is
  the default: on Amazon Toys "last" chose worse epoch counts (see
  docs/results.md).
  After every epoch the model is scored on the held-out examples,
  training stops once `monitor` has not improved for `patience` epochs, and
  the weights of the best epoch are kept (at most `epochs` epochs). With
  `validation_fraction=0` every training example is used for exactly
  `epochs` epochs. With `refit` (the default), a fresh model is then trained
  on every training user, held-out ones included, for the chosen number of
  epochs: no user is left with an untrained embedding, at the price of a
  second training run.

  Data options (the last block of fields, checked by `check_data_options`):
  `aux_negatives` is where DIEN's auxiliary negatives in the training
  batches come from: "prepared" (those `prepare` wrote: the same every
  epoch) or "fresh" (drawn for every batch and epoch with probability
  proportional to count ** `aux_negative_power`, never an item of the row's
  history or its candidate; see `tfrs_din.data.negatives`). `mba_counts`
  is the n_j of MBA: "events" (the vocabulary counts: kept events of the
  log holding id j) or "samples" (training samples holding id j, DIN's
  eq. 4; one pass over the training split, see
  `tfrs_din.data.sample_counts`). `shuffle_buffer` is how many training
  records the shuffle holds (see `make_dataset`).
  """
  model: str = "din"
  epochs: int = 5  # at most: validation stops earlier
  validation_fraction: float = 0.1
  validation: str = "users"
  monitor: str = "gauc"
  patience: int = 1
  refit: bool = True
  # Validation users' own rows (group key) are zero in the selection run,
  # not their random initial values: see `zero_held_out_users`.
  zero_held_out_users: bool = True
  batch_size: int = 256
  learning_rate: float = 1e-3
  embedding_dim: Optional[int] = None
  max_history: Optional[int] = None
  mlp_units: Tuple[int, ...] = (200, 80)
  activation: str = "dice"
  dropout: float = 0.0
  # "auto": a dense L2 on every embedding row, lambda 1e-3 (chosen on
  # validation on Amazon Toys, docs/results.md), up to `DENSE_L2_WARN_ROWS`
  # rows; above, where its step cost grows with the rows, its lazy form
  # "lazy_l2" (see `resolve_regularization`). Or "l2", "lazy_l2", "mba", None.
  regularization: Optional[str] = "auto"
  l2: Optional[float] = None  # None: DEFAULT_L2 of the regulariser
  pooling: str = "sum"
  attention_units: Tuple[int, ...] = (80, 40)
  attention_activation: str = "dice"
  attention_normalization: Optional[str] = None
  attention_padded_statistics: bool = False  # DIN: FuxiCTR's Dice statistics
  attention_initial_weight: float = 0.0  # DIN: 1.0 starts as sum pooling
  gru_units: int = 36
  # DIEN as the official code (chosen on validation, docs/results.md).
  gru_type: str = "AUGRU_OFFICIAL"
  aux_loss_weight: float = 1.0
  aux_loss_reduction: str = "padded_mean"
  dien_attention: str = "mlp"
  # None: Glorot uniform; "identity" (FuxiCTR's): with dien_attention="bilinear".
  dien_attention_initializer: Optional[str] = None
  # None: as the official code (DIN and DIEN yes, the base model no).
  behaviour_sum_in_tower: Optional[bool] = None
  # s in the tower: "sum" (the official code) or "mean" of the valid
  # behaviours, whose scale does not grow with the history: DIN and DIEN
  # overfit less (docs/design.md).
  tower_behaviour_pooling: str = "mean"
  # "auto": "affine" for DIEN (with the options above), none for base/DIN.
  tower_input_normalization: Optional[str] = "auto"
  embedding_stddev: float = 0.05
  kernel_initializer: str = "glorot_normal"
  optimizer: str = "lazy_adam"
  adam_epsilon: float = 1e-7
  adam_adaptive_epsilon: bool = False
  strategy: str = "auto"
  steps_per_epoch: Optional[int] = None
  seed: int = 0
  verbose: int = 2
  # Data options (issue 13); validated by `check_data_options`.
  # "fresh" (chosen on validation, docs/results.md) | "prepared"
  aux_negatives: str = "fresh"
  aux_negative_power: float = 1.0  # with "fresh": P(j) ~ count_j ** power
  mba_counts: str = "events"  # "events" | "samples": the n_j of MBA
  # Records the training shuffle holds: a split up to this size is shuffled
  # whole, so the order of its files does not matter (docs/results.md).
  shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER


# lambda when `TrainConfig.l2` is None: 1e-3 for the dense L2 and its lazy
# form (chosen on validation), 0.01 for MBA (the DIN paper's).
DEFAULT_L2 = {"auto": 1e-3, "l2": 1e-3, "lazy_l2": 1e-3, "mba": 0.01}
# Above this many embedding rows in all, "auto" means "lazy_l2" and `train`
# warns about an explicit dense L2, whose step time grows with the rows (a
# DIN step with LazyAdam's fused dense update, docs/benchmarks.md
# "vocabulary", session 17: 23-31 ms at 21k rows, 40-54 ms at 240k, 2.1-2.4 s
# at 10M; lazy_l2 17-30 ms at every size, MBA's step). Up to here the dense
# L2's small edge in quality (docs/results.md) costs at most 1.6-2.5x
# lazy_l2's step.
DENSE_L2_WARN_ROWS = 250_000


def _embedding_rows(spec: FeatureSpec) -> int:
  return sum(f.vocab_size for f in spec.user_features + spec.item_features)


def resolve_regularization(spec: FeatureSpec, config: TrainConfig
                           ) -> Optional[str]:
  """The regulariser `config` trains with: `config.regularization`, where
  "auto" is the dense "l2" while the tables hold at most
  `DENSE_L2_WARN_ROWS` rows in all and "lazy_l2" above (it needs the
  lazy_adam optimizer; with another one, "l2")."""
  if config.regularization != "auto":
    return config.regularization
  if (_embedding_rows(spec) > DENSE_L2_WARN_ROWS
      and config.optimizer == "lazy_adam"):
    return "lazy_l2"
  return "l2"


def l2_strength(config: TrainConfig) -> float:
  """The lambda `config` trains with: `config.l2`, or the regulariser's
  default (`DEFAULT_L2`; 0 without regularisation)."""
  if config.l2 is not None:
    return float(config.l2)
  return DEFAULT_L2.get(config.regularization, 0.0)


def dense_l2_warning(spec: FeatureSpec, config: TrainConfig) -> Optional[str]:
  """The warning `train` logs when a dense L2 meets large tables, or None.

  A dense L2 adds a gradient to every row of every table at every step (and
  so moves all of them through the optimiser), which costs O(rows);
  "lazy_l2" (what "auto" takes there) and MBA keep the step O(batch).
  """
  rows = _embedding_rows(spec)
  if resolve_regularization(spec, config) != "l2" or rows <= DENSE_L2_WARN_ROWS:
    return None
  return (f"regularization='l2' penalises all {rows:,} embedding rows at "
          "every step, a cost that grows with the tables (a DIN step took "
          "40-54 ms at 240k rows and 2.1-2.4 s at 10M, docs/benchmarks.md); for "
          "tables this large pass --regularization lazy_l2 (the shrinkage "
          "the dense L2 gets from Adam, O(batch) per step plus one pass "
          f"over the tables every {DEFAULT_ROW_L2_EVERY} steps).")


AUX_NEGATIVES = ("prepared", "fresh")
MBA_COUNTS = ("events", "samples")


def check_data_options(config: TrainConfig) -> None:
  """Raises ValueError naming the field of a bad data option.

  Args:
    config: the training options.
  """
  if config.aux_negatives not in AUX_NEGATIVES:
    raise ValueError(f"aux_negatives (--aux_negatives) must be one of "
                     f"{AUX_NEGATIVES}, got {config.aux_negatives!r}")
  power = config.aux_negative_power
  if (isinstance(power, bool) or not isinstance(power, (int, float))
      or not np.isfinite(power) or power < 0):
    raise ValueError("aux_negative_power (--aux_negative_power) must be a "
                     f"finite number >= 0, got {power!r}")
  if config.mba_counts not in MBA_COUNTS:
    raise ValueError(f"mba_counts (--mba_counts) must be one of {MBA_COUNTS}, "
                     f"got {config.mba_counts!r}")
  if config.regularization == "lazy_l2" and config.optimizer != "lazy_adam":
    raise ValueError("regularization (--regularization) 'lazy_l2' is applied "
                     "by the lazy_adam optimizer; got "
                     f"optimizer={config.optimizer!r}")
  if config.mba_counts == "samples" and config.regularization != "mba":
    raise ValueError("mba_counts (--mba_counts) 'samples' sets MBA's n_j, "
                     "which only --regularization mba uses; got "
                     f"regularization={config.regularization!r}")
  check_shuffle_buffer(config.shuffle_buffer,
                       "shuffle_buffer (--shuffle_buffer)")


def build_model(spec: FeatureSpec, config: TrainConfig) -> CTRModel:
  """The model named by `config.model`, with the options that apply to it."""
  if config.model not in MODELS:
    raise ValueError(f"--model must be one of {sorted(MODELS)}, "
                     f"got {config.model!r}")
  common = dict(mlp_units=config.mlp_units, activation=config.activation,
                dropout=config.dropout,
                regularization=resolve_regularization(spec, config),
                l2=l2_strength(config), seed=config.seed,
                embeddings_initializer=tf.keras.initializers.RandomNormal(
                    stddev=config.embedding_stddev),
                kernel_initializer=config.kernel_initializer,
                tower_input_normalization=(
                    ("affine" if config.model == "dien" else None)
                    if config.tower_input_normalization == "auto"
                    else config.tower_input_normalization),
                behaviour_sum_in_tower=(
                    config.model != "base"
                    if config.behaviour_sum_in_tower is None
                    else config.behaviour_sum_in_tower),
                tower_behaviour_pooling=config.tower_behaviour_pooling)
  extra = {
      "base": dict(pooling=config.pooling),
      "din": dict(attention_units=config.attention_units,
                  attention_activation=config.attention_activation,
                  attention_normalization=config.attention_normalization,
                  attention_padded_statistics=(
                      config.attention_padded_statistics),
                  attention_initial_weight=config.attention_initial_weight),
      "dien": dict(gru_units=config.gru_units, gru_type=config.gru_type,
                   aux_loss_weight=config.aux_loss_weight,
                   aux_reduction=config.aux_loss_reduction,
                   attention=config.dien_attention,
                   attention_initializer=config.dien_attention_initializer,
                   attention_units=config.attention_units),
  }[config.model]
  return MODELS[config.model](spec, **common, **extra)


def make_optimizer(name: str, learning_rate: float, epsilon: float = 1e-7,
                   adaptive_epsilon: bool = False):
  """"lazy_adam" (rows of embedding tables updated only when in the batch:
  step cost independent of the vocabulary), "adam" or "sgd".

  `adaptive_epsilon` adds epsilon to the bias-corrected sqrt(v), as PyTorch's
  Adam does, instead of to the raw sqrt(v) (Keras' default).
  """
  from tfrs_din.training.optimizers import LazyAdam  # pylint: disable=g-import-not-at-top
  makers = {"lazy_adam": LazyAdam, "adam": tf.keras.optimizers.Adam}
  if name == "sgd":
    return tf.keras.optimizers.SGD(learning_rate)
  if name not in makers:
    raise ValueError(f"--optimizer must be one of {sorted(makers) + ['sgd']}, "
                     f"got {name!r}")
  return makers[name](learning_rate, epsilon=epsilon,
                      adaptive_epsilon=adaptive_epsilon)


def _uses_negatives(config: TrainConfig, metadata: dict) -> bool:
  needed = config.model == "dien" and config.aux_loss_weight > 0
  if (needed and config.aux_negatives == "prepared"
      and not metadata.get("has_aux_negatives")):
    raise ValueError("DIEN's auxiliary loss needs the auxiliary negatives that "
                     "`prepare` writes unless --no_aux_negatives; re-run "
                     "prepare, pass --aux_negatives fresh or --aux_loss_weight "
                     "0")
  return needed


@dataclasses.dataclass
class _TrainingData:
  """How the training batches are read: the prepared negatives parsed, or
  fresh ones drawn (at most one of the two), or no negatives."""
  with_negatives: bool = False
  fresh_negatives: Optional[FreshNegatives] = None

  def dataset(self, config: TrainConfig, data_dir: str, spec: FeatureSpec,
              **kwargs) -> tf.data.Dataset:
    return make_dataset(data_dir, "train", spec, config.batch_size,
                        shuffle=True, seed=config.seed,
                        with_negatives=self.with_negatives,
                        fresh_negatives=self.fresh_negatives,
                        shuffle_buffer=config.shuffle_buffer, **kwargs)


def _training_data(config: TrainConfig, data_dir: str, spec: FeatureSpec,
                   metadata: dict) -> _TrainingData:
  if not _uses_negatives(config, metadata):
    return _TrainingData()
  if config.aux_negatives == "fresh":
    return _TrainingData(fresh_negatives=FreshNegatives.from_prepared(
        data_dir, spec, config.aux_negative_power))
  return _TrainingData(with_negatives=True)


def _training_spec(config: TrainConfig, data_dir: str, spec: FeatureSpec
                   ) -> FeatureSpec:
  """`spec` with the n_j of `config.mba_counts` as its frequencies (those
  of MBA; the fresh negatives' weights stay the event counts). "samples"
  comes with MBA only: `check_data_options` refuses it otherwise."""
  if config.mba_counts == "samples":
    return with_frequencies(spec, count_samples(data_dir, spec))
  return spec


MONITORS = {"gauc": "max", "auc": "max", "logloss": "min", "loss": "min"}


def _every_training_user(config: TrainConfig, data_dir: str, spec: FeatureSpec,
                         data: _TrainingData) -> tf.data.Dataset:
  return data.dataset(config, data_dir, spec)


VALIDATIONS = ("auto", "users", "last")


def validation_split(config: TrainConfig, metadata: dict) -> str:
  """"users" or "last": what `config.validation` holds out on this data."""
  if config.validation not in VALIDATIONS:
    raise ValueError(f"--validation must be one of {VALIDATIONS}, got "
                     f"{config.validation!r}")
  if config.validation != "auto":
    return config.validation
  protocol = metadata.get("options", {}).get("samples", {}).get("protocol")
  return "last" if protocol == "next_item" else "users"


def _validation(config: TrainConfig, data_dir: str, spec: FeatureSpec,
                data: _TrainingData, metadata: dict
                ) -> Tuple[tf.data.Dataset, Optional[tf.data.Dataset],
                           list]:
  """The training data, the validation data (held-out training users) and the
  early-stopping callback of `config` (None and [] without validation)."""
  common = dict(batch_size=config.batch_size, seed=config.seed)
  if not config.validation_fraction:
    every_user = _every_training_user(config, data_dir, spec, data)
    return every_user, None, []
  if config.monitor not in MONITORS:
    raise ValueError(f"--monitor must be one of {sorted(MONITORS)}, got "
                     f"{config.monitor!r}")
  holdout = dict(holdout_fraction=config.validation_fraction,
                 holdout_seed=config.seed,
                 holdout_by=validation_split(config, metadata))
  train_ds = data.dataset(config, data_dir, spec, holdout="exclude", **holdout)
  val_ds = make_dataset(data_dir, "train", spec, with_negatives=False,
                        holdout="only", **holdout, **common)
  stop = tf.keras.callbacks.EarlyStopping(
      monitor="val_" + config.monitor, mode=MONITORS[config.monitor],
      patience=config.patience, restore_best_weights=True, verbose=1)
  return train_ds, val_ds, [stop]


def train(data_dir: str, model_dir: str, config: TrainConfig,
          callbacks: Sequence[tf.keras.callbacks.Callback] = ()
          ) -> Tuple[CTRModel, Dict[str, list]]:
  """Trains on `data_dir/train` and saves the model; never reads the test split.

  Up to `config.epochs` epochs, stopped early on the validation users, then
  (with `config.refit`) a fresh model trained on every training user for the
  chosen number of epochs (see `TrainConfig`). Logs per epoch: "loss"
  (the whole objective), "logloss", "auc", the embedding penalty ("mba_loss"
  or "l2_loss"), DIEN's "aux_loss", all epoch means, and the same with
  "val_" (plus "val_gauc") on the validation users.

  Checkpoints go to `model_dir/checkpoints` and an interrupted run resumes
  from the last finished epoch when called again; TensorBoard logs go to
  `model_dir/logs`; the trained model to `model_dir/model.keras`, the options,
  the chosen epoch ("best_epoch") and the per-epoch logs ("history" of the
  selection run, "refit_history") to `model_dir/train_config.json`.
  Returns the model and the selection run's logs.
  """
  check_data_options(config)
  # Before any dataset exists: their shuffles and negative draws combine
  # their own seeds with the global one, which must not depend on what ran
  # earlier in this process (e.g. the models before this one in `run`).
  tf.keras.utils.set_random_seed(config.seed)
  spec, metadata = load_feature_spec(data_dir, config.max_history,
                                     config.embedding_dim)
  data = _training_data(config, data_dir, spec, metadata)
  spec = _training_spec(config, data_dir, spec)
  warning = dense_l2_warning(spec, config)
  if warning:
    logging.warning(warning)
  regularization = resolve_regularization(spec, config)
  logging.info("embedding regularisation: %s (lambda %g)", regularization,
               l2_strength(config))
  tf.io.gfile.makedirs(model_dir)
  refit = bool(config.validation_fraction) and config.refit
  selection_file = os.path.join(model_dir, SELECTION_FILE)
  if tf.io.gfile.exists(selection_file):  # resuming after the selection
    with tf.io.gfile.GFile(selection_file) as f:
      selection = json.load(f)
  else:
    train_ds, val_ds, stopping = _validation(config, data_dir, spec, data,
                                             metadata)
    zeroed = (validation_split(config, metadata) == "users"
              and bool(config.validation_fraction)
              and config.zero_held_out_users)
    model, logs = _fit(spec, config, model_dir, "checkpoints", train_ds,
                       val_ds, config.epochs, [*stopping, *callbacks],
                       zero_held_out=zeroed)
    best = stopping[0].best_epoch + 1 if stopping else len(logs["loss"])
    selection = {"best_epoch": best, "history": logs}
    if refit:
      with tf.io.gfile.GFile(selection_file, "w") as f:
        json.dump(selection, f)
  if refit:
    model, refit_logs = _fit(
        spec, config, model_dir, "checkpoints_refit",
        _every_training_user(config, data_dir, spec, data), None,
        selection["best_epoch"], callbacks)
    selection["refit_history"] = refit_logs
  model.save(os.path.join(model_dir, MODEL_FILE))
  with tf.io.gfile.GFile(os.path.join(model_dir, CONFIG_FILE), "w") as f:
    json.dump({"data_dir": data_dir, "config": dataclasses.asdict(config),
               "regularization": regularization, **selection}, f, indent=2)
  if tf.io.gfile.exists(selection_file):
    tf.io.gfile.remove(selection_file)
  return model, selection["history"]


def zero_held_out_users(model: CTRModel, fraction: float, seed: int) -> int:
  """Sets the group key's embedding rows of the held-out users to zero.

  A validation user of the "users" split is in no training batch of the
  selection run, so its own row (e.g. `user_id`'s) never trains: left at its
  random initial value it feeds noise to validation, and a noise whose
  effect grows as the tower learns to use that row. A regulariser that
  shrinks untrained rows (a dense L2) removes it and so looks better on
  validation than it is on the test split, whose users are trained (under
  the next-item protocol). At zero, the mean of the initialiser, every
  regulariser is validated on the same footing. The rows stay zero: no
  gradient reaches them, and neither MBA nor L2 moves a zero row.

  Args:
    model: a built model whose spec has a group key with its own table.
    fraction: `validation_fraction`; seed: the holdout's seed (as in
      `make_dataset(holdout_seed=...)`).

  Returns:
    How many rows were set to zero (0 when the group key has no table).
  """
  tables = model.embedder.tables
  if model.spec.group_key not in tables:
    return 0
  table = tables[model.spec.group_key].embeddings
  rows, width = table.shape
  ids = tf.range(rows, dtype=tf.int64)
  held = tf.boolean_mask(ids, in_holdout(ids, fraction, seed))
  table.scatter_update(tf.IndexedSlices(
      tf.zeros([int(tf.size(held)), width], table.dtype), held))
  return int(tf.size(held))


def _fit(spec: FeatureSpec, config: TrainConfig, model_dir: str,
         checkpoints: str, train_ds: tf.data.Dataset,
         val_ds: Optional[tf.data.Dataset], epochs: int,
         callbacks: Sequence[tf.keras.callbacks.Callback],
         zero_held_out: bool = False
         ) -> Tuple[CTRModel, Dict[str, list]]:
  """A new model of `config` (seeded), fit for `epochs` epochs; with
  `zero_held_out`, the validation users' rows start (and stay) at zero."""
  tf.keras.utils.set_random_seed(config.seed)
  strategy = make_strategy(config.strategy)
  with strategy.scope():
    model = build_model(spec, config)
    model.build_all()  # every variable created (and placed/sharded) in scope
    if zero_held_out:
      zero_held_out_users(model, config.validation_fraction, config.seed)
    model.compile(make_optimizer(config.optimizer, config.learning_rate,
                                 config.adam_epsilon,
                                 config.adam_adaptive_epsilon))
  history = model.fit(
      train_ds, epochs=epochs, validation_data=val_ds,
      steps_per_epoch=config.steps_per_epoch, verbose=config.verbose,
      callbacks=[
          tf.keras.callbacks.BackupAndRestore(
              os.path.join(model_dir, checkpoints)),
          tf.keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
          *callbacks])
  return model, {k: [float(x) for x in v] for k, v in history.history.items()}


def load_model(model_dir: str) -> CTRModel:
  path = os.path.join(model_dir, MODEL_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} does not exist: train a model into "
                            f"{model_dir!r} first (`tfrs-din train`)")
  return tf.keras.models.load_model(path)


def predict_split(model: CTRModel, data_dir: str, split: str = "test",
                  batch_size: int = 1024) -> Dict[str, np.ndarray]:
  """Probabilities, labels and group keys of every example of a split."""
  spec = model.spec
  predict = tf.function(lambda f: model(f, training=False))
  out = {"probability": [], "label": [], "group": []}
  for features in make_dataset(data_dir, split, spec, batch_size,
                               with_negatives=False):
    out["probability"].append(predict(features).numpy())
    out["label"].append(features[spec.label].numpy())
    out["group"].append(features[spec.group_key].numpy())
  return {k: np.concatenate(v) for k, v in out.items()}


def score(predictions: Dict[str, np.ndarray]) -> Dict[str, float]:
  """AUC, GAUC and log loss of `predict_split`'s output."""
  p = np.clip(predictions["probability"].astype(np.float64), 1e-7, 1 - 1e-7)
  y = predictions["label"].astype(np.float64)
  ones = np.zeros_like(y, dtype=np.int64)
  return {
      "auc": float(grouped_auc(ones, y, p)),
      "gauc": float(grouped_auc(predictions["group"], y, p)),
      "logloss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
      "examples": int(len(y)),
  }


def evaluate(model: CTRModel, data_dir: str,
             base_metrics: Optional[Dict[str, float]] = None
             ) -> Dict[str, float]:
  """Scores the test split; RelaImpr (on GAUC, and on AUC) against a base run."""
  metrics = score(predict_split(model, data_dir))
  if base_metrics:
    metrics["rela_impr"] = rela_impr(metrics["gauc"], base_metrics["gauc"])
    metrics["rela_impr_auc"] = rela_impr(metrics["auc"], base_metrics["auc"])
  return metrics
