"""Training, evaluation and loading of models on a prepared data directory."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_din._suggest import did_you_mean
from tfrs_din.data.negatives import FreshNegatives
from tfrs_din.data.pipeline import in_holdout, load_feature_spec, make_dataset
from tfrs_din.optimizers import LazyAdam
from tfrs_din.schema import vocabulary_path
from tfrs_din.training.config import MONITORS, TrainConfig
from tfrs_din.training.distribute import make_strategy
from tfrs_din.features import FeatureSpec
from tfrs_din.metrics.gauc import grouped_auc
from tfrs_din.metrics.rela_impr import rela_impr
from tfrs_din.models import MODELS, CTRModel

MODEL_FILE = "model.keras"
CONFIG_FILE = "train_config.json"
SELECTION_FILE = "selection.json"  # the chosen epoch, until the refit ends


def model_arguments(model: str) -> Tuple[str, ...]:
  """Keyword arguments of `model`'s constructor (and of `CTRModel`'s), the
  keys `TrainConfig.model_options` may hold for it."""
  names = []
  for cls in MODELS[model].__mro__:
    if cls is tfrs.models.Model:
      break
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
      if (parameter.kind in (parameter.POSITIONAL_OR_KEYWORD,
                             parameter.KEYWORD_ONLY)
          and name not in ("self", "spec") and name not in names):
        names.append(name)
  return tuple(names)


def check_model_options(config: TrainConfig,
                        models: Optional[Sequence[str]] = None) -> None:
  """Raises ValueError naming a key of `config.model_options` that no model
  of `models` (default: `config.model`) takes, or a scope that is no model."""
  models = list(models or [config.model])
  known = {m: set(model_arguments(m)) for m in models}
  for key in config.model_options:
    scope, _, name = key.rpartition(".")
    if scope and scope not in MODELS:
      raise ValueError(f"--model_options {key}: {scope!r} is not a model "
                       f"(one of {', '.join(MODELS)})")
    targets = [scope] if scope else models
    if scope and scope not in models:
      continue  # scoped to a model this run does not train
    if not any(name in known[m] for m in targets):
      every = set().union(*(known[m] for m in targets))
      raise ValueError(
          f"--model_options: {name!r} is not an option of "
          f"{' or '.join(MODELS[m].__name__ for m in targets)}"
          f"{did_you_mean(name, every)} (options: {', '.join(sorted(every))})")


def config_for(config: TrainConfig, model: str) -> TrainConfig:
  """`config` for training `model`, with the model options that `model`
  takes (its scoped ones, and the unscoped ones its constructor accepts):
  what `tfrs-din run` trains each of its models with."""
  taken = set(model_arguments(model))
  options = {k: v for k, v in config.options_for(model).items() if k in taken}
  return dataclasses.replace(config, model=model, model_options=options)


def build_model(spec: FeatureSpec, config: TrainConfig) -> CTRModel:
  """`config.model` built with its `model_options` (the constructor's
  defaults for the rest) and `config.seed`.

  "auto" regularisation resolves to "lazy_l2" on large tables only with the
  lazy_adam optimizer, which applies it; with another optimizer it is the
  dense "l2".
  """
  options = config.options_for(config.model)
  if (options.get("regularization", "auto") == "auto"
      and config.optimizer != "lazy_adam"):
    options["regularization"] = "l2"
  options.setdefault("seed", config.seed)
  return MODELS[config.model](spec, **options)


def make_optimizer(name: str, learning_rate: float, epsilon: float = 1e-7):
  """"lazy_adam" (rows of embedding tables updated only when in the batch:
  step cost independent of the vocabulary), "adam" or "sgd"."""
  if name == "sgd":
    return tf.keras.optimizers.SGD(learning_rate)
  if name == "adam":
    return tf.keras.optimizers.Adam(learning_rate, epsilon=epsilon)
  if name == "lazy_adam":
    return LazyAdam(learning_rate, epsilon=epsilon)
  raise ValueError(f"--optimizer must be one of lazy_adam, adam, sgd; got "
                   f"{name!r}")


def vocabulary_fingerprints(data_dir: str, spec: FeatureSpec
                            ) -> Dict[str, str]:
  """SHA-256 of each categorical feature's vocabulary (its ids in index
  order): a model's rows mean those ids and no others."""
  prints = {}
  for feature in spec.user_features + spec.item_features:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(vocabulary_path(data_dir, feature.name)) as f:
      for line in f:
        digest.update(line.split("\t")[1].encode() + b"\n"
                      if "\t" in line else line.encode())
    prints[feature.name] = digest.hexdigest()
  return prints


def check_same_vocabularies(model_dir: str, data_dir: str,
                            spec: Optional[FeatureSpec] = None) -> None:
  """Raises ValueError naming the first vocabulary of `data_dir` that
  differs from the one the model in `model_dir` was trained on (models
  trained before fingerprints were recorded are not checked)."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    trained = json.load(f).get("vocabularies")
  if not trained:
    return
  if spec is None:
    spec, _ = load_feature_spec(data_dir)
  current = vocabulary_fingerprints(data_dir, spec)
  for name, digest in trained.items():
    if current.get(name) != digest:
      raise ValueError(
          f"the {name} vocabulary of {data_dir} differs from the one the model "
          f"in {model_dir} was trained on (see its {CONFIG_FILE}): ids would "
          "map to other rows. Use the data the model was trained on, or train "
          "a new model on this data.")


def _uses_negatives(config: TrainConfig, model: CTRModel,
                    metadata: dict) -> bool:
  needed = model.has_auxiliary_loss
  if (needed and config.aux_negatives == "prepared"
      and not metadata.get("has_aux_negatives")):
    raise ValueError("DIEN's auxiliary loss needs the auxiliary negatives that "
                     "`prepare` writes unless --no_aux_negatives; re-run "
                     "prepare, pass --aux_negatives fresh or --model_options "
                     "aux_loss_weight=0")
  return needed


@dataclasses.dataclass
class _TrainingData:
  """How the training batches are read: the prepared negatives parsed, or
  fresh ones drawn (at most one of the two), or no negatives."""
  with_negatives: bool = False
  fresh_negatives: Optional[FreshNegatives] = None

  def dataset(self, config: TrainConfig, data_dir: str, spec: FeatureSpec,
              **kwargs) -> tf.data.Dataset:
    if config.shuffle_buffer is not None:
      kwargs["shuffle_buffer"] = config.shuffle_buffer
    return make_dataset(data_dir, "train", spec, config.batch_size,
                        shuffle=True, seed=config.seed,
                        with_negatives=self.with_negatives,
                        fresh_negatives=self.fresh_negatives, **kwargs)


def _training_data(config: TrainConfig, model: CTRModel, data_dir: str,
                   spec: FeatureSpec, metadata: dict) -> _TrainingData:
  if not _uses_negatives(config, model, metadata):
    return _TrainingData()
  if config.aux_negatives == "fresh":
    return _TrainingData(fresh_negatives=FreshNegatives.from_prepared(
        data_dir, spec, config.aux_negative_power))
  return _TrainingData(with_negatives=True)


def _validation(config: TrainConfig, data_dir: str, spec: FeatureSpec,
                data: _TrainingData
                ) -> Tuple[tf.data.Dataset, Optional[tf.data.Dataset],
                           list]:
  """The training data, the validation data (held-out training users) and the
  early-stopping callback of `config` (None and [] without validation)."""
  if not config.validation_fraction:
    return data.dataset(config, data_dir, spec), None, []
  holdout = dict(holdout_fraction=config.validation_fraction,
                 holdout_seed=config.seed, holdout_by="users")
  train_ds = data.dataset(config, data_dir, spec, holdout="exclude", **holdout)
  val_ds = make_dataset(data_dir, "train", spec, with_negatives=False,
                        holdout="only", batch_size=config.batch_size,
                        seed=config.seed, **holdout)
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
  config.check()
  check_model_options(config)
  # Before any dataset exists: their shuffles and negative draws combine
  # their own seeds with the global one, which must not depend on what ran
  # earlier in this process (e.g. the models before this one in `run`).
  tf.keras.utils.set_random_seed(config.seed)
  spec, metadata = load_feature_spec(data_dir, config.max_history,
                                     config.embedding_dim)
  if _resuming(model_dir):
    check_same_vocabularies(model_dir, data_dir, spec)
  # The model's own rules (aux loss, "auto" penalty) decide the data; left
  # unbuilt (no tables), as each fit builds a fresh one, reseeded, in scope.
  probe = build_model(spec, config)
  if probe.regularization == "lazy_l2" and config.optimizer != "lazy_adam":
    raise ValueError("regularization 'lazy_l2' is applied by the lazy_adam "
                     f"optimizer; got --optimizer {config.optimizer}: use "
                     "lazy_adam or --model_options regularization=l2")
  data = _training_data(config, probe, data_dir, spec, metadata)
  logging.info("embedding regularisation: %s (lambda %g)",
               probe.regularization, probe.l2)
  del probe
  tf.io.gfile.makedirs(model_dir)
  record = {"data_dir": data_dir, "config": dataclasses.asdict(config),
            "vocabularies": vocabulary_fingerprints(data_dir, spec)}
  _write_json(os.path.join(model_dir, CONFIG_FILE), record)
  refit = bool(config.validation_fraction) and config.refit
  selection_file = os.path.join(model_dir, SELECTION_FILE)
  if tf.io.gfile.exists(selection_file):  # resuming after the selection
    with tf.io.gfile.GFile(selection_file) as f:
      selection = json.load(f)
  else:
    train_ds, val_ds, stopping = _validation(config, data_dir, spec, data)
    model, logs = _fit(spec, config, model_dir, "checkpoints", train_ds,
                       val_ds, config.epochs, [*stopping, *callbacks],
                       zero_held_out=bool(config.validation_fraction))
    selection = {"best_epoch": _best_epoch(config, logs), "history": logs}
    if refit:
      _write_json(selection_file, selection)
  if refit:
    model, refit_logs = _fit(
        spec, config, model_dir, "checkpoints_refit",
        data.dataset(config, data_dir, spec), None,
        selection["best_epoch"], callbacks)
    selection["refit_history"] = refit_logs
  model.save(os.path.join(model_dir, MODEL_FILE))
  _write_json(os.path.join(model_dir, CONFIG_FILE),
              {**record, "regularization": model.regularization, **selection})
  if tf.io.gfile.exists(selection_file):
    tf.io.gfile.remove(selection_file)
  return model, selection["history"]


def _write_json(path: str, value: dict) -> None:
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(value, f, indent=2)


def _resuming(model_dir: str) -> bool:
  """Whether `train` into `model_dir` continues an interrupted run."""
  return any(tf.io.gfile.exists(os.path.join(model_dir, name))
             for name in (SELECTION_FILE, "checkpoints", "checkpoints_refit"))


def _best_epoch(config: TrainConfig, logs: Dict[str, list]) -> int:
  """The 1-based epoch with the best validation `monitor` (the first of
  equals), or the last epoch without validation."""
  values = logs.get("val_" + config.monitor)
  if not config.validation_fraction or not values:
    return len(logs["loss"])
  best = max if MONITORS[config.monitor] == "max" else min
  return values.index(best(values)) + 1


class _EpochLogs(tf.keras.callbacks.Callback):
  """Keeps every epoch's logs in a file beside the checkpoints, so that the
  history of a run resumed by `BackupAndRestore` has every epoch (Keras'
  `History` has only those run after the restore)."""

  def __init__(self, path: str):
    super().__init__()
    self.path = path
    self.epochs: Dict[int, dict] = {}
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        self.epochs = {int(k): v for k, v in json.load(f).items()}

  def on_epoch_end(self, epoch, logs=None):
    self.epochs[epoch] = {k: float(v) for k, v in (logs or {}).items()}
    _write_json(self.path, self.epochs)

  def history(self) -> Dict[str, list]:
    epochs = [self.epochs[e] for e in sorted(self.epochs)]
    names = sorted({k for logs in epochs for k in logs})
    return {k: [logs.get(k, float("nan")) for logs in epochs] for k in names}


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
                                 config.adam_epsilon))
  epoch_logs = _EpochLogs(os.path.join(model_dir, checkpoints + "_logs.json"))
  if (config.steps_per_epoch is None
      and tf.io.gfile.exists(os.path.join(model_dir, checkpoints))):
    # Resuming: Keras, which learns an epoch's length by running out of the
    # data, counts the restored epochs into the first one's (its progress
    # bar and step counts); a pass over the data gives it the length.
    batches = int(train_ds.reduce(0, lambda count, _: count + 1))
    train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(batches))
  model.fit(
      train_ds, epochs=epochs, validation_data=val_ds,
      steps_per_epoch=config.steps_per_epoch, verbose=config.verbose,
      callbacks=[
          tf.keras.callbacks.BackupAndRestore(
              os.path.join(model_dir, checkpoints)),
          tf.keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
          epoch_logs, *callbacks])
  if tf.io.gfile.exists(epoch_logs.path):
    tf.io.gfile.remove(epoch_logs.path)
  return model, epoch_logs.history()


def load_model(model_dir: str, data_dir: Optional[str] = None) -> CTRModel:
  """The model `train` saved in `model_dir`; with `data_dir`, first checks
  that the data's vocabularies are those it was trained on."""
  path = os.path.join(model_dir, MODEL_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} does not exist: train a model into "
                            f"{model_dir!r} first (`tfrs-din train`)")
  if data_dir is not None:
    check_same_vocabularies(model_dir, data_dir)
  # Uncompiled: scoring and export need no optimizer; compile to train on.
  return tf.keras.models.load_model(path, compile=False)


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
