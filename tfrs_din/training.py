"""Training, evaluation and loading of models on a prepared data directory."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrs_din.data.pipeline import load_feature_spec, make_dataset
from tfrs_din.distribute import make_strategy
from tfrs_din.features import FeatureSpec
from tfrs_din.metrics.gauc import grouped_auc
from tfrs_din.metrics.rela_impr import rela_impr
from tfrs_din.models import MODELS, CTRModel

MODEL_FILE = "model.keras"
CONFIG_FILE = "train_config.json"


@dataclasses.dataclass
class TrainConfig:
  """Options of a training run; defaults follow the papers' official code.

  `model` is "base", "din" or "dien"; the other fields map to the model
  arguments of `tfrs_din.models` (only those of the chosen model are used).
  """
  model: str = "din"
  epochs: int = 3
  batch_size: int = 256
  learning_rate: float = 1e-3
  embedding_dim: Optional[int] = None
  max_history: Optional[int] = None
  mlp_units: Tuple[int, ...] = (200, 80)
  activation: str = "dice"
  dropout: float = 0.0
  regularization: Optional[str] = "mba"
  l2: float = 0.01
  pooling: str = "sum"
  attention_units: Tuple[int, ...] = (80, 40)
  attention_activation: str = "dice"
  attention_normalization: Optional[str] = None
  gru_units: int = 36
  gru_type: str = "AUGRU"
  aux_loss_weight: float = 1.0
  optimizer: str = "lazy_adam"
  strategy: str = "auto"
  steps_per_epoch: Optional[int] = None
  seed: int = 0
  verbose: int = 2


def build_model(spec: FeatureSpec, config: TrainConfig) -> CTRModel:
  """The model named by `config.model`, with the options that apply to it."""
  if config.model not in MODELS:
    raise ValueError(f"--model must be one of {sorted(MODELS)}, "
                     f"got {config.model!r}")
  common = dict(mlp_units=config.mlp_units, activation=config.activation,
                dropout=config.dropout, regularization=config.regularization,
                l2=config.l2, seed=config.seed)
  extra = {
      "base": dict(pooling=config.pooling),
      "din": dict(attention_units=config.attention_units,
                  attention_activation=config.attention_activation,
                  attention_normalization=config.attention_normalization),
      "dien": dict(gru_units=config.gru_units, gru_type=config.gru_type,
                   aux_loss_weight=config.aux_loss_weight),
  }[config.model]
  return MODELS[config.model](spec, **common, **extra)


def make_optimizer(name: str, learning_rate: float):
  """"lazy_adam" (rows of embedding tables updated only when in the batch:
  step cost independent of the vocabulary), "adam" or "sgd"."""
  from tfrs_din.optimizers import LazyAdam  # pylint: disable=g-import-not-at-top
  makers = {"lazy_adam": LazyAdam, "adam": tf.keras.optimizers.Adam,
            "sgd": tf.keras.optimizers.SGD}
  if name not in makers:
    raise ValueError(f"--optimizer must be one of {sorted(makers)}, got {name!r}")
  return makers[name](learning_rate)


def _uses_negatives(config: TrainConfig, metadata: dict) -> bool:
  needed = config.model == "dien" and config.aux_loss_weight > 0
  if needed and not metadata.get("has_aux_negatives"):
    raise ValueError("DIEN's auxiliary loss needs the auxiliary negatives that "
                     "`prepare` writes unless --no_aux_negatives; re-run "
                     "prepare or pass --aux_loss_weight 0")
  return needed


def train(data_dir: str, model_dir: str, config: TrainConfig,
          callbacks: Sequence[tf.keras.callbacks.Callback] = ()
          ) -> Tuple[CTRModel, Dict[str, list]]:
  """Trains on `data_dir/train`, validates on `data_dir/test`, saves the model.

  Checkpoints go to `model_dir/checkpoints` and an interrupted run resumes
  from the last finished epoch when called again; TensorBoard logs go to
  `model_dir/logs`; the trained model to `model_dir/model.keras`.
  """
  tf.keras.utils.set_random_seed(config.seed)
  spec, metadata = load_feature_spec(data_dir, config.max_history,
                                     config.embedding_dim)
  with_negatives = _uses_negatives(config, metadata)
  strategy = make_strategy(config.strategy)
  with strategy.scope():
    model = build_model(spec, config)
    model.build_all()  # every variable created (and placed/sharded) in scope
    model.compile(make_optimizer(config.optimizer, config.learning_rate))
  train_ds = make_dataset(data_dir, "train", spec, config.batch_size,
                          shuffle=True, with_negatives=with_negatives,
                          seed=config.seed)
  test_ds = make_dataset(data_dir, "test", spec, config.batch_size,
                         with_negatives=False)
  tf.io.gfile.makedirs(model_dir)
  history = model.fit(
      train_ds, epochs=config.epochs, validation_data=test_ds,
      steps_per_epoch=config.steps_per_epoch, verbose=config.verbose,
      callbacks=[
          tf.keras.callbacks.BackupAndRestore(
              os.path.join(model_dir, "checkpoints")),
          tf.keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
          *callbacks])
  model.save(os.path.join(model_dir, MODEL_FILE))
  with tf.io.gfile.GFile(os.path.join(model_dir, CONFIG_FILE), "w") as f:
    json.dump({"data_dir": data_dir, "config": dataclasses.asdict(config)}, f,
              indent=2)
  return model, history.history


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
