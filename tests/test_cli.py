"""The `tfrs-din` command line on a small log: run, train/evaluate/export,
resume after interruption, the model it ships, its flags, and one-sentence
errors."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din import cli, training
from tfrs_din.data.pipeline import load_feature_spec
from tfrs_din.data.synthetic import SyntheticConfig
from tfrs_din.demo import write_events
from tfrs_din.models import MODELS
from tfrs_din.training import trainer

SCHEDULE = ["--epochs", "1", "--batch_size", "64", "--verbose", "0"]
# `run` trains every model: each takes the options its constructor has.
SMALL = SCHEDULE + ["--model_options",
                    "mlp_units=[8,4],attention_units=[8,4],gru_units=4"]
SMALL_DIN = SCHEDULE + ["--model_options",
                        "mlp_units=[8,4],attention_units=[8,4],"
                        "activation=dice,attention_normalization=softmax"]


def _events(root, seed):
  path = root / "events.csv"
  write_events(str(path), SyntheticConfig(num_users=60, max_steps=30,
                                          seed=seed))
  return str(path)


@pytest.fixture(scope="module")
def events(tmp_path_factory):
  return _events(tmp_path_factory.mktemp("log"), seed=1)


def _prepare(events_path, out):
  assert cli.main(["prepare", "--events", events_path, "--output", out,
                   "--max_history", "8", "--embedding_dim", "4"]) == 0
  return out


@pytest.fixture(scope="module")
def prepared(events, tmp_path_factory):
  return _prepare(events, str(tmp_path_factory.mktemp("prepared") / "data"))


@pytest.fixture(scope="module")
def other_prepared(tmp_path_factory):
  """Prepared from another log: other ids, other vocabularies."""
  root = tmp_path_factory.mktemp("other")
  return _prepare(_events(root, seed=2), str(root / "data"))


@pytest.fixture(scope="module")
def trained_din(prepared, tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("trained") / "din")
  assert cli.main(["train", "--data", prepared, "--model", "din",
                   "--model_dir", model_dir] + SMALL_DIN) == 0
  return model_dir


def _one_line_error(capsys, command):
  """The one stderr line of a refused command, checked for its form."""
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert "Traceback" not in err
  assert lines[0].startswith(f"tfrs-din {command}: error: ")
  return lines[0]


def test_run_writes_metrics_models_and_exports(events, tmp_path):
  out = str(tmp_path / "run")
  code = cli.main(["run", "--events", events, "--output", out,
                   "--protocol", "labeled", "--label_column", "label",
                   "--test_fraction", "0.3", "--max_history", "10",
                   "--embedding_dim", "4", "--models", "base,din,dien"] + SMALL)
  assert code == 0
  metrics = json.load(open(os.path.join(out, "metrics.json")))
  assert set(metrics) == {"base", "din", "dien"}
  for name, m in metrics.items():
    assert 0 <= m["auc"] <= 1 and 0 <= m["gauc"] <= 1 and m["logloss"] > 0
    assert os.path.exists(os.path.join(m["export"], "saved_model.pb"))
    assert ("rela_impr" in m) == (name != "base")
  base, din = metrics["base"], metrics["din"]
  assert din["rela_impr"] == pytest.approx(
      ((din["gauc"] - 0.5) / (base["gauc"] - 0.5) - 1) * 100)
  assert os.listdir(os.path.join(out, "models", "din", "logs"))  # TensorBoard
  # Each model took the options its constructor has: gru_units reached DIEN
  # only, attention_units DIN and DIEN.
  options = {name: json.load(open(os.path.join(
      out, "models", name, "train_config.json")))["config"]["model_options"]
             for name in metrics}
  assert options == {
      "base": {"mlp_units": [8, 4]},
      "din": {"mlp_units": [8, 4], "attention_units": [8, 4]},
      "dien": {"mlp_units": [8, 4], "attention_units": [8, 4],
               "gru_units": 4}}
  dien = training.load_model(os.path.join(out, "models", "dien"))
  assert dien.gru_units == 4 and dien.attention_units == (8, 4)


def test_train_evaluate_export_commands(prepared, trained_din, tmp_path,
                                       capsys):
  data, model_dir = prepared, trained_din
  meta = json.load(open(os.path.join(data, "metadata.json")))
  assert meta["counts"]["samples_train"] > 0
  saved = json.load(open(os.path.join(model_dir, "train_config.json")))
  assert saved["config"]["model_options"] == {
      "mlp_units": [8, 4], "attention_units": [8, 4], "activation": "dice",
      "attention_normalization": "softmax"}
  capsys.readouterr()
  out_json = str(tmp_path / "metrics.json")
  assert cli.main(["evaluate", "--data", data, "--model_dir", model_dir,
                   "--output", out_json]) == 0
  metrics = json.load(open(out_json))
  model = training.load_model(model_dir)
  expected = training.score(training.predict_split(model, data))
  assert metrics["gauc"] == pytest.approx(expected["gauc"], abs=1e-9)
  assert cli.main(["export", "--model_dir", model_dir, "--version", "3"]) == 0
  path = capsys.readouterr().out.strip().splitlines()[-1]
  assert path.endswith(os.path.join("export", "3"))
  # The model dir knows its data: raw-id signatures, ids from the log.
  from beam_jobs.vocabulary import load_vocabularies
  loaded = tf.saved_model.load(path)
  vocabs = load_vocabularies(data, ["user_id", "item_id", "category_id"])
  with open(os.path.join(data, "item_table.tsv")) as f:
    table = dict(line.split("\t") for line in f.read().splitlines()[1:])
  user, item = vocabs["user_id"].ids[0], vocabs["item_id"].ids[0]
  raw = loaded.signatures["score_candidates"](
      user_id=tf.constant([user]), hist_item_id=tf.constant([[item, ""]]),
      candidate_item_id=tf.constant([["no such item"]]))["probabilities"]
  index = loaded.signatures["score_candidates_indices"](
      user_id=tf.constant([2], tf.int64),
      hist_item_id=tf.constant([[2]], tf.int64),
      hist_category_id=tf.constant([[vocabs["category_id"].index(
          table[item])]], tf.int64),
      hist_length=tf.constant([1], tf.int64),
      candidate_item_id=tf.constant([[1]], tf.int64),
      candidate_category_id=tf.constant([[1]], tf.int64))["probabilities"]
  np.testing.assert_allclose(raw, index, rtol=1e-5)
  assert cli.main(["export", "--model_dir", model_dir, "--version", "4",
                   "--index_only"]) == 0
  index_only = tf.saved_model.load(capsys.readouterr().out.strip())
  spec = index_only.signatures["serving_default"].structured_input_signature[1]
  assert spec["user_id"].dtype == tf.int64
  # --jit_compile: an XLA-compiled scorer with the same probabilities.
  assert cli.main(["export", "--model_dir", model_dir, "--version", "5",
                   "--jit_compile"]) == 0
  xla_path = capsys.readouterr().out.strip()
  with open(os.path.join(xla_path, "saved_model.pb"), "rb") as f:
    assert b"_XlaMustCompile" in f.read()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    assert b"_XlaMustCompile" not in f.read()
  xla = tf.saved_model.load(xla_path).signatures["score_candidates"](
      user_id=tf.constant([user]), hist_item_id=tf.constant([[item, ""]]),
      candidate_item_id=tf.constant([["no such item"]]))["probabilities"]
  np.testing.assert_allclose(xla, raw, rtol=1e-5)


def test_training_resumes_after_interruption(prepared, other_prepared,
                                             tmp_path):
  config = training.TrainConfig(model="base", epochs=3, batch_size=64,
                                model_options={"mlp_units": (8,)}, verbose=0)
  before = []

  class Interrupt(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      before.append(dict(logs))
      if epoch == 1:
        raise KeyboardInterrupt

  model_dir = str(tmp_path / "model")
  with pytest.raises(KeyboardInterrupt):
    training.train(prepared, model_dir, config, callbacks=[Interrupt()])
  # Resuming on other data is refused before anything is trained or written:
  # the checkpoint's rows mean the first data's ids.
  record = open(os.path.join(model_dir, "train_config.json")).read()
  with pytest.raises(ValueError, match=r"vocabulary of .* differs from the "
                     "one the model .* was trained on"):
    training.train(other_prepared, model_dir, config)
  assert open(os.path.join(model_dir, "train_config.json")).read() == record
  epochs_run = []

  class Record(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      epochs_run.append(epoch)

  _, history = training.train(prepared, model_dir, config,
                              callbacks=[Record()])
  saved = json.load(open(os.path.join(model_dir, "train_config.json")))
  # Epochs 0 and 1 of the selection run were restored, not re-run; then the
  # refit trains every user for the chosen number of epochs.
  assert epochs_run == [2] + list(range(saved["best_epoch"]))
  # The history has every epoch of the selection run, the two before the
  # interruption with the values they were logged with.
  assert len(history["loss"]) == len(saved["history"]["loss"]) == 3
  assert len(saved["history"]["val_gauc"]) == 3
  for epoch, logs in enumerate(before):
    for name in ("loss", "val_gauc"):
      assert saved["history"][name][epoch] == pytest.approx(logs[name],
                                                            rel=1e-6)
  assert len(saved["refit_history"]["loss"]) == saved["best_epoch"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/nonexistent", "--model_dir", "/tmp/x"],
     "metadata.json does not exist"),
    (["evaluate", "--data", "/nonexistent", "--model_dir", "/nonexistent"],
     "train a model into"),
    (["prepare", "--events", "/nonexistent.csv", "--output", "/tmp/x"],
     "--events: no file matches"),
])
def test_errors_are_one_clear_sentence(argv, message, capsys):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_bad_model_list_is_rejected(capsys):
  with pytest.raises(SystemExit):
    cli.main(["run", "--events", "x.csv", "--output", "o", "--models", "din,xgb"])
  assert "subset of base,din,dien" in capsys.readouterr().err


def test_build_kernels_compiles_ahead_then_reports_the_cache(tmp_path,
                                                             monkeypatch,
                                                             capsys):
  from tfrs_din.ops import packed_gru  # pylint: disable=g-import-not-at-top
  fake = tmp_path / "fake-g++"
  fake.write_text('#!/bin/sh\nwhile [ "$#" -gt 0 ]; do\n'
                  '  [ "$1" = "-o" ] && echo lib > "$2"; shift\ndone\n')
  fake.chmod(0o755)
  monkeypatch.setenv("CXX", str(fake))
  monkeypatch.setenv("TFRS_DIN_KERNEL_CACHE", str(tmp_path / "cache"))
  assert cli.main(["build-kernels"]) == 0
  out, err = capsys.readouterr()
  assert err == packed_gru.COMPILING + "\n"
  assert out.startswith("built fused GRU kernels in ")
  assert out.rstrip().endswith(str(packed_gru.built_library()))
  assert cli.main(["build-kernels"]) == 0
  assert capsys.readouterr().out == (
      f"fused GRU kernels already built: {packed_gru.built_library()}\n")


def test_build_kernels_without_a_compiler_says_so(monkeypatch, capsys):
  from tfrs_din.ops import build  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(build, "compiler", lambda: None)
  assert cli.main(["build-kernels"]) == 1
  assert capsys.readouterr().err == (
      "tfrs-din build-kernels: no C++ compiler found (set $CXX or install "
      "g++); DIEN will run its GRUs as TensorFlow ops (slower).\n")


@pytest.mark.parametrize("model,builds", [("dien", 1), ("din", 0)])
def test_train_starts_the_kernel_build_only_for_dien(model, builds, tmp_path,
                                                     monkeypatch):
  from tfrs_din.ops import packed_gru
  calls, trained = [], []
  monkeypatch.setattr(packed_gru, "build_in_background",
                      lambda: calls.append(1))
  monkeypatch.setattr(training, "train",
                      lambda data, model_dir, config: trained.append(
                          (calls[:], config.model)))
  assert cli.main(["train", "--data", str(tmp_path), "--model", model,
                   "--model_dir", str(tmp_path / "m")]) == 0
  assert trained == [([1] * builds, model)]  # started before training


def _without_name(config):
  """A model config as a `.keras` file stores it, less the unique name."""
  config = json.loads(json.dumps(config))
  config.pop("name")
  return config


@pytest.mark.parametrize("model", ["base", "din", "dien"])
def test_train_ships_the_model_the_constructor_builds(model, prepared,
                                                      tmp_path, monkeypatch):
  # One set of defaults: `tfrs-din train --model X` with no model options
  # trains `X(spec, seed=0)`, what a TFRS user gets from the constructor.
  from tfrs_din.ops import packed_gru  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(packed_gru, "build_in_background", lambda: None)
  model_dir = tmp_path / model
  assert cli.main(["train", "--data", prepared, "--model", model,
                   "--model_dir", str(model_dir), "--epochs", "1",
                   "--steps_per_epoch", "1", "--validation_fraction", "0",
                   "--verbose", "0"]) == 0
  spec, _ = load_feature_spec(prepared)
  shipped = training.load_model(str(model_dir), prepared)
  constructed = MODELS[model](spec, seed=0)
  assert type(shipped) is type(constructed)
  assert _without_name(shipped.get_config()) == _without_name(
      constructed.get_config())
  # The config a parsed command line gives builds it too.
  args = cli.build_parser().parse_args(
      ["train", "--data", prepared, "--model", model, "--model_dir", "m"])
  built = training.build_model(spec, cli._train_config(args, model))  # pylint: disable=protected-access
  assert _without_name(built.get_config()) == _without_name(
      constructed.get_config())


def _options(parser):
  """(option strings, action) of each flag of `parser`."""
  return [(a.option_strings, a) for a in parser._actions  # pylint: disable=protected-access
          if a.option_strings]


def test_train_help_has_few_flags_each_explained_with_its_default(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["train", "--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  parser = cli.build_parser().commands["train"]
  strings = [s for names, _ in _options(parser) for s in names]
  assert len([s for s in strings if s.startswith("--") or s == "-h"]) <= 25
  # The help text: one block per flag, its continuation lines indented.
  options = text.split("options:", 1)[1]
  blocks = {}
  for block in re.split(r"\n(?=  -)", options.strip("\n")):
    words = " ".join(block.split())
    first = words.split()[0].rstrip(",")
    blocks[first] = words
  assert set(blocks) == {names[0] for names, _ in _options(parser)}
  defaults = training.TrainConfig()
  fields = {f for f in defaults.__dataclass_fields__}
  for names, action in _options(parser):
    block = blocks[names[0]]
    assert action.help and len(block.split()) > len(names) + 2, names
    if names[0] in ("-h", "--debug"):  # switches
      continue
    dest = action.dest
    value = getattr(defaults, dest, None)
    if dest in fields and value is not None and dest != "model_options":
      assert f"(default: {value})" in block, (names, block)
    elif dest in fields or action.default is not None:
      assert "default:" in block, (names, block)
    else:  # no default: required, or a file to read
      assert action.required or dest == "config", names
  # Every flag but the data, model and file ones sets a TrainConfig field.
  others = {"help", "debug", "data", "model", "model_dir", "config"}
  assert {a.dest for _, a in _options(parser)} - others <= fields


@pytest.mark.parametrize("flags, message", [
    (["--batch_size", "0"], "--batch_size must be an integer >= 1, got 0"),
    (["--validation_fraction", "1.5"], "--validation_fraction must be a share "
     "of the training users in [0, 1)"),
    (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--learning_rate", "-1"], "--learning_rate must be a number > 0"),
    (["--model", "dien", "--model_options", "gru_unit=4"],
     "--model_options: 'gru_unit' is not an option of DIENModel; did you mean "
     "'gru_units'?"),
    (["--model_options", "gru_units=4"],
     "'gru_units' is not an option of DINModel"),
    (["--model_options", "xgb.depth=3"],
     "--model_options xgb.depth: 'xgb' is not a model"),
    (["--model", "dien", "--model_options", "gru_type=XYZ"],
     "gru_type must be one of"),
    (["--optimizer", "adam", "--model_options", "regularization=lazy_l2"],
     "regularization 'lazy_l2' is applied by the lazy_adam optimizer"),
])
def test_bad_training_options_are_one_line_naming_the_flag(
    flags, message, prepared, tmp_path, capsys):
  model_dir = tmp_path / "model"
  assert cli.main(["train", "--data", prepared, "--model_dir",
                   str(model_dir), *flags]) == 2
  line = _one_line_error(capsys, "train")
  assert message in line
  assert line.endswith("(--debug shows the traceback)")
  assert not model_dir.exists()


def test_a_bad_config_file_is_one_line_naming_the_key(prepared, tmp_path,
                                                       capsys):
  path = tmp_path / "config.yaml"
  path.write_text("epochs: 2\nlearning_rat: 0.01\n")
  model_dir = tmp_path / "model"
  assert cli.main(["train", "--data", prepared, "--model_dir", str(model_dir),
                   "--config", str(path)]) == 2
  line = _one_line_error(capsys, "train")
  assert (f"--config {path}: unknown option 'learning_rat'; did you mean "
          "'learning_rate'?") in line
  assert not model_dir.exists()


@pytest.mark.parametrize("flag, suggestion", [
    ("--epoch", "--epochs"), ("--epcohs", "--epochs"),
    ("--learning-rate", "--learning_rate"),
    ("--model_option", "--model_options")])
def test_a_mistyped_flag_is_refused_with_the_closest_one(flag, suggestion,
                                                          tmp_path, capsys):
  model_dir = tmp_path / "model"
  assert cli.main(["train", "--data", str(tmp_path), "--model_dir",
                   str(model_dir), flag, "3"]) == 2
  line = _one_line_error(capsys, "train")
  assert line.startswith(f"tfrs-din train: error: unknown flag {flag}; did "
                         f"you mean {suggestion}?")
  assert not model_dir.exists()


def test_a_model_refuses_data_with_other_vocabularies(
    prepared, other_prepared, trained_din, capsys):
  spec, _ = load_feature_spec(prepared)
  ours = trainer.vocabulary_fingerprints(prepared, spec)
  theirs = trainer.vocabulary_fingerprints(other_prepared, spec)
  differing = [name for name in ours if ours[name] != theirs[name]]
  assert differing
  expected = (f"the {differing[0]} vocabulary of {other_prepared} differs "
              f"from the one the model in {trained_din} was trained on")
  capsys.readouterr()
  assert cli.main(["evaluate", "--data", other_prepared, "--model_dir",
                   trained_din]) == 2
  assert expected in _one_line_error(capsys, "evaluate")
  export_dir = os.path.join(trained_din, "other_export")
  assert cli.main(["export", "--model_dir", trained_din, "--data",
                   other_prepared, "--export_dir", export_dir]) == 2
  assert expected in _one_line_error(capsys, "export")
  assert not os.path.exists(export_dir)
  with pytest.raises(ValueError, match=re.escape(expected)):
    training.load_model(trained_din, other_prepared)
  # The data it was trained on loads, and gives the model's predictions.
  checked = training.load_model(trained_din, prepared)
  unchecked = training.load_model(trained_din)
  assert type(checked) is MODELS["din"]
  np.testing.assert_array_equal(
      training.predict_split(checked, prepared)["probability"],
      training.predict_split(unchecked, prepared)["probability"])
