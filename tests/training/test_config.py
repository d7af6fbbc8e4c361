"""`TrainConfig` and how `tfrs-din train` fills it: TrainConfig defaults <-
--config file <- flags given; model options parsed, scoped and checked
against the constructors; bad values refused naming the flag."""

import json
import re

import pytest

from tfrs_din import cli, training
from tfrs_din.features import CategoricalFeature, FeatureSpec
from tfrs_din.models import MODELS
from tfrs_din.training import trainer
from tfrs_din.training.config import (load_config_file, parse_model_options,
                                      parse_value)


def _train_args(*flags):
  return cli.build_parser().parse_args(
      ["train", "--data", "d", "--model_dir", "m", *flags])


def _config(model, *flags):
  return cli._train_config(_train_args(*flags), model)  # pylint: disable=protected-access


def test_no_flags_give_the_train_config_defaults():
  config = _config("dien")
  assert config == training.TrainConfig(model="dien")
  assert (config.aux_negatives, config.aux_negative_power,
          config.shuffle_buffer, config.model_options) == ("fresh", 1.0, None,
                                                           {})


def test_flags_set_the_fields():
  config = _config(
      "dien", "--aux_negatives", "prepared", "--aux_negative_power", "0.75",
      "--shuffle_buffer", "5000", "--epochs", "3", "--validation_fraction",
      "0", "--refit", "false", "--optimizer", "adam", "--embedding_dim", "6",
      "--seed", "4")
  assert (config.aux_negatives, config.aux_negative_power,
          config.shuffle_buffer, config.epochs, config.validation_fraction,
          config.refit, config.optimizer, config.embedding_dim,
          config.seed) == ("prepared", 0.75, 5000, 3, 0.0, False, "adam", 6, 4)


@pytest.mark.parametrize("flag, value", [("--aux_negatives", "online"),
                                         ("--optimizer", "adagrad"),
                                         ("--refit", "maybe")])
def test_flags_refuse_other_values(flag, value, capsys):
  with pytest.raises(SystemExit) as exit_info:
    _train_args(flag, value)
  assert exit_info.value.code == 2
  assert flag in capsys.readouterr().err


@pytest.mark.parametrize("field, value, message", [
    ("aux_negatives", "online", "--aux_negatives must be one of fresh, "
     "prepared; got 'online'"),
    ("aux_negative_power", -0.5, "--aux_negative_power must be a finite "
     "number >= 0"),
    ("aux_negative_power", float("inf"), "--aux_negative_power must be a "
     "finite number >= 0"),
    ("shuffle_buffer", 0, "--shuffle_buffer must be an integer >= 1, got 0"),
    ("shuffle_buffer", 1e6, "--shuffle_buffer must be an integer >= 1, got "
     "1000000.0"),
    ("batch_size", 0, "--batch_size must be an integer >= 1, got 0"),
    ("epochs", True, "--epochs must be an integer >= 1, got True"),
    ("validation_fraction", 1.0, "--validation_fraction must be a share of "
     "the training users in [0, 1)"),
    ("validation_fraction", -0.1, "--validation_fraction must be"),
    ("learning_rate", 0.0, "--learning_rate must be a number > 0; got 0.0"),
    ("monitor", "accuracy", "--monitor must be one of gauc, auc, logloss, "
     "loss"),
    ("model_options", [("gru_units", 4)], "--model_options must be a mapping"),
])
def test_bad_values_name_the_flag(field, value, message, tmp_path):
  config = training.TrainConfig(**{field: value})
  with pytest.raises(ValueError, match=re.escape(message)):
    config.check()
  # `train` checks them before reading any data or writing anything.
  with pytest.raises(ValueError, match=re.escape(message)):
    training.train("/nonexistent", str(tmp_path / "model"), config)
  assert not (tmp_path / "model").exists()


def test_a_validation_fraction_of_zero_is_accepted():
  training.TrainConfig(validation_fraction=0).check()
  training.TrainConfig(validation_fraction=0.5).check()


@pytest.mark.parametrize("text, value", [
    ("24", 24), ("1e-3", 1e-3), ("-0.5", -0.5), ("true", True),
    ("false", False), ("True", True), ("False", False), ("none", None),
    ("None", None), ("null", None), ("AGRU", "AGRU"), ('"24"', "24"),
    ("[200, 80]", [200, 80]), ("[]", []),
    ('{"class_name": "Zeros", "config": {}}',
     {"class_name": "Zeros", "config": {}})])
def test_parse_value_reads_json_none_and_bare_strings(text, value):
  parsed = parse_value(text)
  assert parsed == value and type(parsed) is type(value)


def test_model_options_parse_lists_bools_none_strings_and_scopes():
  config = _config(
      "dien", "--model_options",
      "mlp_units=[200,80], behaviour_sum_in_tower=false,dropout=0.1,"
      "tower_input_normalization=none,dien.gru_type=AGRU,"
      'din.attention_activation="prelu",'
      'embeddings_initializer={"class_name":"RandomNormal",'
      '"config":{"stddev":0.01}}')
  assert config.model_options == {
      "mlp_units": [200, 80], "behaviour_sum_in_tower": False,
      "dropout": 0.1, "tower_input_normalization": None,
      "dien.gru_type": "AGRU", "din.attention_activation": "prelu",
      "embeddings_initializer": {"class_name": "RandomNormal",
                                 "config": {"stddev": 0.01}}}
  # Scoped keys reach their model only, without the scope.
  assert config.options_for("dien")["gru_type"] == "AGRU"
  assert "attention_activation" not in config.options_for("dien")
  assert config.options_for("din")["attention_activation"] == "prelu"
  assert "gru_type" not in config.options_for("din")


def test_a_scoped_key_wins_over_the_unscoped_one():
  config = training.TrainConfig(model_options={
      "gru_units": 8, "dien.gru_units": 24, "din.gru_units": 2})
  assert config.options_for("dien") == {"gru_units": 24}


@pytest.mark.parametrize("text", ["gru_units", "=3", "gru_units=4,,x"])
def test_model_options_without_key_and_value_are_refused(text, capsys):
  if text == "gru_units=4,,x":  # empty pairs are skipped; "x" is not a pair
    with pytest.raises(ValueError, match=r"key=value pairs .* got 'x'"):
      parse_model_options(text)
    return
  with pytest.raises(ValueError, match="--model_options takes key=value"):
    parse_model_options(text)
  with pytest.raises(SystemExit) as exit_info:
    _train_args("--model_options", text)
  assert exit_info.value.code == 2
  assert "--model_options takes key=value" in capsys.readouterr().err


CONFIG = {"epochs": 3, "batch_size": 32, "learning_rate": 0.005,
          "validation_fraction": 0.2,
          "model_options": {"mlp_units": [16, 8], "dien.gru_units": 12}}
YAML = """\
epochs: 3
batch_size: 32
learning_rate: 0.005
validation_fraction: 0.2
model_options:
  mlp_units: [16, 8]
  dien.gru_units: 12
"""


@pytest.fixture(params=["json", "yaml"])
def config_file(request, tmp_path):
  path = tmp_path / f"config.{request.param}"
  path.write_text(json.dumps(CONFIG) if request.param == "json" else YAML)
  return str(path)


def test_a_config_file_sets_fields_and_model_options(config_file):
  config = _config("dien", "--config", config_file)
  assert config == training.TrainConfig(model="dien", **CONFIG)
  assert trainer.config_for(config, "dien").model_options == {
      "mlp_units": [16, 8], "gru_units": 12}


def test_flags_given_override_the_config_file(config_file):
  config = _config("dien", "--config", config_file, "--epochs", "7",
                   "--model_options", "dien.gru_units=4,dropout=0.5")
  assert config.epochs == 7  # the flag
  assert (config.batch_size, config.learning_rate) == (32, 0.005)  # the file
  # Model options merge key by key, the flag's winning.
  assert config.model_options == {"mlp_units": [16, 8], "dien.gru_units": 4,
                                  "dropout": 0.5}


@pytest.mark.parametrize("suffix, text, message", [
    ("json", '{"epoch": 3}', "unknown option 'epoch'; did you mean "
     "'epochs'?"),
    ("yaml", "regularization: mba\n", "unknown option 'regularization'"),
    ("json", "[3]", "expected a mapping of option names"),
    ("json", "{epochs: 3", "not valid JSON"),
    ("yaml", "epochs: [3", "not valid YAML"),
])
def test_bad_config_files_are_refused_by_name(suffix, text, message,
                                              tmp_path):
  path = tmp_path / f"config.{suffix}"
  path.write_text(text)
  with pytest.raises(ValueError, match=re.escape(message)) as error:
    load_config_file(str(path))
  assert str(error.value).startswith(f"--config {path}: ")


def test_a_missing_config_file_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="--config .*: no such file"):
    load_config_file(str(tmp_path / "nope.yaml"))


def test_model_arguments_are_the_constructor_keywords():
  base = trainer.model_arguments("base")
  din = trainer.model_arguments("din")
  dien = trainer.model_arguments("dien")
  for common in ("mlp_units", "regularization", "l2", "seed",
                 "tower_behaviour_pooling", "embeddings_initializer"):
    assert common in base and common in din and common in dien
  assert "pooling" in base and "attention_activation" in din
  assert {"gru_units", "gru_type", "aux_reduction",
          "attention_type"} <= set(dien)
  assert "gru_units" not in din and "attention_units" not in base
  assert "spec" not in din and "kwargs" not in din
  for removed in ("attention_padded_statistics", "attention_initial_weight",
                  "attention_initializer", "attention"):
    assert removed not in din + dien


@pytest.mark.parametrize("model, options, models, message", [
    ("dien", {"gru_unit": 4}, None, "--model_options: 'gru_unit' is not an "
     "option of DIENModel; did you mean 'gru_units'?"),
    ("din", {"gru_units": 4}, None, "'gru_units' is not an option of "
     "DINModel"),
    ("din", {"xgb.depth": 3}, None, "--model_options xgb.depth: 'xgb' is not "
     "a model (one of base, din, dien)"),
    ("base", {"gru_units": 4}, ["base", "din"], "'gru_units' is not an "
     "option of BaseModel or DINModel"),
    ("din", {"din.gru_units": 4}, ["din", "dien"], "'gru_units' is not an "
     "option of DINModel"),
    ("din", {"attention_initial_weight": 1.0}, None,
     "'attention_initial_weight' is not an option of DINModel"),
])
def test_unknown_model_options_are_refused_by_name(model, options, models,
                                                   message):
  config = training.TrainConfig(model=model, model_options=options)
  with pytest.raises(ValueError, match=re.escape(message)):
    trainer.check_model_options(config, models)


def test_options_of_some_of_the_models_pass_the_check_for_all():
  config = training.TrainConfig(model_options={
      "gru_units": 4, "mlp_units": [8], "dien.attention_units": [4],
      "din.attention_activation": "prelu"})
  trainer.check_model_options(config, ["base", "din", "dien"])
  trainer.check_model_options(config, ["din", "dien"])
  with pytest.raises(ValueError, match="'gru_units' is not an option of "
                     "BaseModel or DINModel"):
    trainer.check_model_options(config, ["base", "din"])
  # A key scoped to a model this run does not train is not checked.
  only_base = training.TrainConfig(model="base", model_options={
      "mlp_units": [8], "dien.no_such_option": 1})
  trainer.check_model_options(only_base)


def test_run_gives_each_model_the_options_it_takes():
  config = training.TrainConfig(model_options={
      "gru_units": 4, "mlp_units": [8], "attention_units": [6],
      "din.attention_activation": "prelu", "dien.mlp_units": [16]})
  assert trainer.config_for(config, "base").model_options == {
      "mlp_units": [8]}
  assert trainer.config_for(config, "din").model_options == {
      "mlp_units": [8], "attention_units": [6],
      "attention_activation": "prelu"}
  dien = trainer.config_for(config, "dien")
  assert dien.model == "dien"
  assert dien.model_options == {"gru_units": 4, "mlp_units": [16],
                                "attention_units": [6]}
  assert config.model_options["mlp_units"] == [8]  # not modified


def _spec(users=50, items=80):
  return FeatureSpec(
      user_features=[CategoricalFeature("user_id", users, 4)],
      item_features=[CategoricalFeature("item_id", items, 4),
                     CategoricalFeature("category_id", 10, 4)],
      max_history=8)


def _without_name(config):
  """A model config as a `.keras` file stores it, less the unique name."""
  config = json.loads(json.dumps(config))
  config.pop("name")
  return config


@pytest.mark.parametrize("model", ["base", "din", "dien"])
def test_the_cli_builds_the_constructors_default_model(model):
  # One set of defaults: `tfrs-din train --model X` with no model flags is
  # `X(spec, seed=0)`, the model a TFRS user builds.
  spec = _spec()
  built = trainer.build_model(spec, _config(model, "--model", model))
  assert type(built) is MODELS[model]
  assert _without_name(built.get_config()) == _without_name(
      MODELS[model](spec, seed=0).get_config())
  # ... and a model option changes exactly that argument.
  changed = trainer.build_model(
      spec, _config(model, "--model_options", "mlp_units=[16],seed=3"))
  expected = MODELS[model](spec, mlp_units=(16,), seed=3)
  assert _without_name(changed.get_config()) == _without_name(
      expected.get_config())
  assert changed.get_config()["mlp_units"] != built.get_config()["mlp_units"]


def test_the_default_model_is_din():
  spec = _spec()
  args = _train_args()
  built = trainer.build_model(spec, cli._train_config(args, args.model))  # pylint: disable=protected-access
  assert type(built) is MODELS["din"]


def test_a_config_file_may_name_the_model_and_the_flag_wins(tmp_path):
  path = tmp_path / "config.json"
  path.write_text(json.dumps({"model": "dien"}))
  args = _train_args("--config", str(path))
  assert cli._train_config(args, args.model).model == "dien"  # pylint: disable=protected-access
  args = _train_args("--config", str(path), "--model", "base")
  assert cli._train_config(args, args.model).model == "base"  # pylint: disable=protected-access


def test_auto_regularisation_follows_the_optimizer_and_the_table_size():
  small, large = _spec(), _spec(users=150_000, items=100_001)
  auto = training.TrainConfig(model="base")
  assert trainer.build_model(small, auto).regularization == "l2"
  assert trainer.build_model(large, auto).regularization == "lazy_l2"
  # lazy_l2 is LazyAdam's: with another optimizer "auto" stays dense.
  adam = training.TrainConfig(model="base", optimizer="adam")
  assert trainer.build_model(large, adam).regularization == "l2"
  for explicit in ("l2", "mba", "lazy_l2", None):
    config = training.TrainConfig(model="base", optimizer="adam",
                                  model_options={"regularization": explicit})
    assert trainer.build_model(large, config).regularization == explicit


@pytest.mark.parametrize("text, expected", [("False", False), ("false", False),
                                            ("True", True), ("1", 1)])
def test_python_booleans_in_model_options_reach_the_model(text, expected):
  config = _config("base", "--model_options", f"behaviour_sum_in_tower={text}")
  built = trainer.build_model(_spec(), config)
  assert built.behaviour_sum_in_tower == expected
  assert built.get_config()["behaviour_sum_in_tower"] == expected
