"""The `tfrs-din` command line on a small log: run, train/evaluate/export,
resume after interruption, and one-sentence errors."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din import cli, training
from tfrs_din.data.synthetic import SyntheticConfig
from tfrs_din.demo import write_events

SMALL = ["--epochs", "1", "--batch_size", "64", "--mlp_units", "8,4",
         "--attention_units", "8,4", "--gru_units", "4", "--verbose", "0"]


@pytest.fixture(scope="module")
def events(tmp_path_factory):
  path = tmp_path_factory.mktemp("log") / "events.csv"
  write_events(str(path), SyntheticConfig(num_users=60, max_steps=30, seed=1))
  return str(path)


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


def test_train_evaluate_export_commands(events, tmp_path, capsys):
  data = str(tmp_path / "data")
  assert cli.main(["prepare", "--events", events, "--output", data,
                   "--max_history", "8", "--embedding_dim", "4"]) == 0
  meta = json.load(open(os.path.join(data, "metadata.json")))
  assert meta["counts"]["samples_train"] > 0
  model_dir = str(tmp_path / "din")
  assert cli.main(["train", "--data", data, "--model", "din", "--model_dir",
                   model_dir, "--activation", "dice",
                   "--attention_normalization", "softmax"] + SMALL) == 0
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


def test_training_resumes_after_interruption(events, tmp_path):
  data = str(tmp_path / "data")
  cli.main(["prepare", "--events", events, "--output", data,
            "--max_history", "8", "--embedding_dim", "4"])
  config = training.TrainConfig(model="base", epochs=3, batch_size=64,
                                mlp_units=(8,), verbose=0)

  class Interrupt(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      if epoch == 1:
        raise KeyboardInterrupt

  model_dir = str(tmp_path / "model")
  with pytest.raises(KeyboardInterrupt):
    training.train(data, model_dir, config, callbacks=[Interrupt()])
  epochs_run = []

  class Record(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      epochs_run.append(epoch)

  _, history = training.train(data, model_dir, config, callbacks=[Record()])
  saved = json.load(open(os.path.join(model_dir, "train_config.json")))
  # Epochs 0 and 1 of the selection run were restored, not re-run; then the
  # refit trains every user for the chosen number of epochs.
  assert epochs_run == [2] + list(range(saved["best_epoch"]))
  assert len(history["loss"]) == 1


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
