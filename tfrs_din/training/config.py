"""`TrainConfig`: the options of a training run, and the model options.

The model options (`TrainConfig.model_options`) are the keyword arguments of
the model's constructor; the constructors' defaults are the defaults of
`tfrs-din train`, so each hyperparameter is written once, in the model.
This module imports no TensorFlow, so the command line starts fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Iterable, Mapping, Optional

from tfrs_din._suggest import did_you_mean

MODEL_NAMES = ("base", "din", "dien")
MONITORS = {"gauc": "max", "auc": "max", "logloss": "min", "loss": "min"}
OPTIMIZERS = ("lazy_adam", "adam", "sgd")
# Names of `tfrs_din.training.distribute.make_strategy`.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker",
              "parameter_server")
AUX_NEGATIVES = ("fresh", "prepared")


@dataclasses.dataclass
class TrainConfig:
  """How a model is trained: schedule, optimizer, data and distribution.

  The model is `model` ("base", "din" or "dien") built with `model_options`,
  keyword arguments of its constructor (`tfrs_din.models.DINModel`, ...); an
  option not given keeps the constructor's default. A key may be scoped to
  one model as "dien.gru_units" (what `tfrs-din run`, which trains several
  models, needs); an unscoped key applies to every model that takes it.

  The schedule is chosen on validation users, never on the test split:
  `validation_fraction` of the training users (whole users, by a seeded
  hash) are held out; after every epoch the model is scored on them,
  training stops once `monitor` has not improved for `patience` epochs, and
  the best epoch's weights are kept (at most `epochs` epochs). With
  `validation_fraction=0` every training example is used for exactly
  `epochs` epochs. With `refit` (the default), a fresh model is then trained
  on every training user, held-out ones included, for the chosen number of
  epochs: no user is left with an untrained embedding.

  Data options: `aux_negatives` is where DIEN's auxiliary negatives come
  from: "fresh" (drawn for every batch and epoch with probability
  proportional to count ** `aux_negative_power`, never an item of the row's
  history or its candidate; `tfrs_din.data.negatives`) or "prepared" (those
  `prepare` wrote: the same every epoch). `shuffle_buffer` is how many
  training records the shuffle holds (None: `make_dataset`'s default, which
  shuffles a split of that size whole). `embedding_dim` and `max_history`
  override the prepared data's.

  `strategy` names a `tf.distribute` strategy (`tfrs_din.training.distribute`).
  """
  model: str = "din"
  model_options: Dict[str, Any] = dataclasses.field(default_factory=dict)
  epochs: int = 5
  validation_fraction: float = 0.1
  monitor: str = "gauc"
  patience: int = 1
  refit: bool = True
  batch_size: int = 256
  learning_rate: float = 1e-3
  optimizer: str = "lazy_adam"
  adam_epsilon: float = 1e-7
  embedding_dim: Optional[int] = None
  max_history: Optional[int] = None
  aux_negatives: str = "fresh"
  aux_negative_power: float = 1.0
  shuffle_buffer: Optional[int] = None
  strategy: str = "auto"
  steps_per_epoch: Optional[int] = None
  seed: int = 0
  verbose: int = 2

  def check(self) -> None:
    """Raises ValueError naming the flag of the first bad option."""
    _one_of("--model", self.model, MODEL_NAMES)
    _one_of("--monitor", self.monitor, tuple(MONITORS))
    _one_of("--optimizer", self.optimizer, OPTIMIZERS)
    _one_of("--strategy", self.strategy, STRATEGIES)
    _one_of("--aux_negatives", self.aux_negatives, AUX_NEGATIVES)
    _integer("--epochs", self.epochs, 1)
    _integer("--patience", self.patience, 0)
    _integer("--batch_size", self.batch_size, 1)
    for flag, value in (("--shuffle_buffer", self.shuffle_buffer),
                        ("--embedding_dim", self.embedding_dim),
                        ("--max_history", self.max_history),
                        ("--steps_per_epoch", self.steps_per_epoch)):
      if value is not None:
        _integer(flag, value, 1)
    _number("--validation_fraction", self.validation_fraction, 0.0, 1.0,
            "a share of the training users in [0, 1): 0.1 holds out a tenth "
            "of them, 0 trains --epochs epochs on all")
    _number("--learning_rate", self.learning_rate, 0.0, None, "a number > 0")
    _number("--adam_epsilon", self.adam_epsilon, 0.0, None, "a number > 0")
    _number("--aux_negative_power", self.aux_negative_power, None, None,
            "a finite number >= 0")
    if self.aux_negative_power < 0:
      raise ValueError("--aux_negative_power must be a finite number >= 0, "
                       f"got {self.aux_negative_power!r}")
    if not isinstance(self.model_options, Mapping):
      raise ValueError("--model_options must be a mapping of constructor "
                       f"arguments, got {self.model_options!r}")

  def options_for(self, model: str) -> Dict[str, Any]:
    """`model_options` that apply to `model`: unscoped keys and its own
    "model.key" ones (scope removed; a scoped key wins)."""
    plain = {k: v for k, v in self.model_options.items() if "." not in k}
    scoped = {k.split(".", 1)[1]: v for k, v in self.model_options.items()
              if k.split(".", 1)[0] == model and "." in k}
    return {**plain, **scoped}


def with_options(config: TrainConfig, **options: Any) -> TrainConfig:
  """`config` with `options` applied: `TrainConfig` fields set, any other
  key added to `model_options` (a model constructor argument).

  >>> with_options(TrainConfig(), optimizer="adam", gru_units=24).model_options
  {'gru_units': 24}
  """
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  model_options = dict(config.model_options)
  model_options.update({k: v for k, v in options.items() if k not in fields})
  return dataclasses.replace(
      config, model_options=model_options,
      **{k: v for k, v in options.items() if k in fields})


def _one_of(flag: str, value: Any, choices: Iterable[str]) -> None:
  if value not in tuple(choices):
    raise ValueError(f"{flag} must be one of {', '.join(choices)}; got "
                     f"{value!r}")


def _integer(flag: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{flag} must be an integer >= {minimum}, got {value!r}")


def _number(flag: str, value: Any, above: Optional[float],
            below: Optional[float], what: str) -> None:
  ok = (not isinstance(value, bool) and isinstance(value, (int, float))
        and value == value and value not in (float("inf"), float("-inf")))
  if ok and above is not None:
    ok = value > above or (value == above == 0.0 and below is not None)
  if ok and below is not None:
    ok = value < below
  if not ok:
    raise ValueError(f"{flag} must be {what}; got {value!r}")


def parse_value(text: str) -> Any:
  """A command-line value: JSON (numbers, true/false, null, [lists],
  "strings"), "none"/"None" for None, "True"/"False" as Python writes them
  (not the strings, which would be truthy), anything else the string itself."""
  word = text.strip().lower()
  if word == "none":
    return None
  if word in ("true", "false"):
    return word == "true"
  try:
    return json.loads(text)
  except ValueError:
    return text


def parse_model_options(text: str) -> Dict[str, Any]:
  """"key=value,key=value" -> dict. Values as `parse_value`; a value with
  commas is written in brackets ("mlp_units=[200,80]").

  >>> parse_model_options("gru_units=24,mlp_units=[200,80],dien.gru_type=AGRU")
  {'gru_units': 24, 'mlp_units': [200, 80], 'dien.gru_type': 'AGRU'}
  """
  options: Dict[str, Any] = {}
  depth, start, parts = 0, 0, []
  for i, char in enumerate(text):
    depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
    if char == "," and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  for part in (p.strip() for p in parts):
    if not part:
      continue
    key, sep, value = part.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"--model_options takes key=value pairs separated by "
                       f"commas, got {part!r}")
    options[key.strip()] = parse_value(value.strip())
  return options


def load_config_file(path: str) -> Dict[str, Any]:
  """A JSON or YAML mapping of `TrainConfig` fields (`model_options` a
  mapping of its own), checked by name."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config {path}: no such file")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    if path.endswith((".yaml", ".yml")):
      import yaml  # pylint: disable=g-import-not-at-top
      values = yaml.safe_load(text)
    else:
      values = json.loads(text)
  except ValueError as error:  # json's and yaml's errors are ValueErrors
    raise ValueError(f"--config {path}: not valid "
                     f"{'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}"
                     f": {str(error).splitlines()[0]}") from None
  except Exception as error:  # yaml.YAMLError
    raise ValueError(f"--config {path}: not valid YAML: "
                     f"{str(error).splitlines()[0]}") from None
  if not isinstance(values, dict):
    raise ValueError(f"--config {path}: expected a mapping of option names "
                     "to values")
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  for key in values:
    if key not in fields:
      raise ValueError(f"--config {path}: unknown option {key!r}"
                       f"{did_you_mean(key, fields)}")
  return values
