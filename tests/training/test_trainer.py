"""`tfrs_din.training.train`: the schedule is chosen on validation users,
the best epoch is kept, and the test split is never read."""

import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din import training
from tfrs_din.training import trainer
from tfrs_din.data.pipeline import in_holdout, load_feature_spec, make_dataset
from prepared_log import prepared_log
from tfrs_din.data.synthetic import SyntheticConfig
from tfrs_din.schema import vocabulary_path

# Small models: the widths of every model, the attention's where it has one.
OPTIONS = {"mlp_units": (8, 4), "activation": "prelu",
           "din.attention_units": (8, 4), "din.attention_activation": "prelu",
           "dien.attention_units": (8, 4), "dien.gru_units": 4,
           "dien.aux_hidden_units": (8, 4)}
SMALL = dict(batch_size=64, verbose=0, model_options=OPTIONS)


def _small(**options):
  """SMALL with more model options."""
  return dict(SMALL, model_options={**OPTIONS, **options})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return prepared_log(tmp_path_factory.mktemp("training"),
                      SyntheticConfig(num_users=80, max_steps=24, seed=4),
                      "--protocol", "labeled", "--label_column", "label",
                      "--max_history", "8", "--embedding_dim", "4")


class _Blind(tf.keras.callbacks.Callback):
  """From epoch `start` (0-based) on, zeroes the tower's output layer just
  before validation: every logit is 0, so those epochs score log loss log 2."""

  def __init__(self, start):
    super().__init__()
    self.start = start
    self.epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self.epoch = epoch

  def on_test_begin(self, logs=None):
    if self.epoch >= self.start:
      for weight in self.model.tower._output.weights:
        weight.assign(tf.zeros_like(weight))


def test_training_keeps_the_best_validation_epoch_without_the_test_split(
    prepared, tmp_path):
  data = str(tmp_path / "data")
  shutil.copytree(prepared, data)
  shutil.rmtree(os.path.join(data, "test"))  # train must not need it
  config = training.TrainConfig(model="din", epochs=4, patience=2,
                                monitor="logloss", learning_rate=5e-3,
                                refit=False, **SMALL)
  model_dir = str(tmp_path / "din")
  model, logs = training.train(data, model_dir, config,
                               callbacks=[_Blind(start=1)])
  saved = json.load(open(os.path.join(model_dir, "train_config.json")))
  # Epochs 2 and 3 were blinded: patience 2 stops after epoch 3 and the
  # weights of epoch 1 are restored.
  assert logs["val_logloss"][0] < 0.68
  assert logs["val_logloss"][1:] == pytest.approx([np.log(2)] * 2, rel=1e-5)
  assert logs["val_gauc"][1:] == pytest.approx([0.5, 0.5])
  assert saved["best_epoch"] == 1
  assert saved["regularization"] == "l2"  # "auto" on tables this small
  assert saved["history"]["val_logloss"] == pytest.approx(logs["val_logloss"])
  spec, _ = load_feature_spec(data)
  validation = make_dataset(data, "train", spec, 64, with_negatives=False,
                            holdout="only", holdout_seed=config.seed)
  restored = model.evaluate(validation, return_dict=True, verbose=0)
  assert restored["logloss"] == pytest.approx(logs["val_logloss"][0], rel=1e-5)
  assert restored["gauc"] == pytest.approx(logs["val_gauc"][0], abs=1e-6)
  assert {"loss", "logloss", "l2_loss", "val_loss", "val_logloss",
          "val_l2_loss"} <= set(logs)


def _initial_user_table(spec, config):
  tf.keras.utils.set_random_seed(config.seed)
  model = training.build_model(spec, config)
  model.build_all()
  return model.embedder.tables["user_id"].embeddings.numpy()


@pytest.mark.parametrize("refit", [False, True])
def test_refit_trains_the_held_out_users_for_the_chosen_epochs(
    prepared, tmp_path, refit):
  # MBA: only a batch's rows move (a dense L2 would shrink the others too).
  config = training.TrainConfig(model="base", epochs=2, patience=2,
                                validation_fraction=0.3, refit=refit,
                                **_small(regularization="mba"))
  model_dir = str(tmp_path / "base")
  model, _ = training.train(prepared, model_dir, config)
  saved = json.load(open(os.path.join(model_dir, "train_config.json")))
  assert not os.path.exists(os.path.join(model_dir, trainer.SELECTION_FILE))
  spec, _ = load_feature_spec(prepared)
  users = np.unique(np.concatenate([
      b["user_id"].numpy() for b in make_dataset(prepared, "train", spec)]))
  held_out = in_holdout(tf.constant(users), 0.3, config.seed).numpy()
  held, kept = users[held_out], users[~held_out]
  assert len(held) > 5
  table = model.embedder.tables["user_id"].embeddings.numpy()
  initial = _initial_user_table(spec, config)
  untouched = np.all(table[held] == initial[held], axis=1)
  assert not np.all(table[kept] == initial[kept], axis=1).any()
  if refit:  # every held-out user was trained on in the refit
    assert len(saved["refit_history"]["loss"]) == saved["best_epoch"]
    assert not untouched.any()
    assert not (table[held] == 0).all(axis=1).any()
  else:  # never in a training batch: zero from the start, and still
    assert "refit_history" not in saved
    assert (table[held] == 0).all()
    assert (np.abs(initial[held]) > 0).all()


def test_zero_held_out_users_zeroes_exactly_the_validation_users(prepared):
  spec, _ = load_feature_spec(prepared)
  config = training.TrainConfig(model="din", **SMALL)
  tf.keras.utils.set_random_seed(0)
  model = training.build_model(spec, config)
  model.build_all()
  before = model.embedder.tables["user_id"].embeddings.numpy()
  count = trainer.zero_held_out_users(model, 0.25, seed=3)
  after = model.embedder.tables["user_id"].embeddings.numpy()
  ids = np.arange(before.shape[0])
  held = in_holdout(tf.constant(ids), 0.25, 3).numpy()
  assert count == held.sum() > 0
  assert (after[held] == 0).all()
  np.testing.assert_array_equal(after[~held], before[~held])
  # The validation split of the same fraction and seed holds out exactly
  # these users.
  validation = make_dataset(prepared, "train", spec, 64, with_negatives=False,
                            holdout="only", holdout_fraction=0.25,
                            holdout_seed=3)
  seen = np.unique(np.concatenate([b["user_id"].numpy() for b in validation]))
  assert held[seen].all()


def test_without_validation_every_user_trains_for_all_epochs(prepared,
                                                             tmp_path):
  config = training.TrainConfig(model="base", epochs=2,
                                validation_fraction=0.0, **SMALL)
  _, logs = training.train(prepared, str(tmp_path / "base"), config)
  assert len(logs["loss"]) == 2 and not any(k.startswith("val_") for k in logs)


def test_unknown_monitor_is_refused(prepared, tmp_path):
  config = training.TrainConfig(model="base", monitor="accuracy", **SMALL)
  with pytest.raises(ValueError, match="--monitor must be one of"):
    training.train(prepared, str(tmp_path / "m"), config)


@pytest.mark.parametrize("regularization,l2,resolved,expected", [
    ("auto", None, "l2", 1e-3), ("l2", None, "l2", 1e-3),
    ("mba", None, "mba", 0.01), ("l2", 0.05, "l2", 0.05),
    ("lazy_l2", None, "lazy_l2", 1e-3), (None, None, None, 0.0)])
def test_each_regulariser_has_its_own_default_lambda(prepared, regularization,
                                                      l2, resolved, expected):
  spec, _ = load_feature_spec(prepared)
  config = training.TrainConfig(
      model="din", **_small(regularization=regularization, l2=l2))
  model = training.build_model(spec, config)
  model.build_all()
  # Stored resolved ("auto" is the dense L2 on tables this small).
  assert model.regularization == model.embedder.regularization == resolved
  assert model.get_config()["regularization"] == resolved
  assert model.l2 == pytest.approx(expected)
  if regularization == "auto":  # the default
    assert training.build_model(
        spec, training.TrainConfig(model="din", **SMALL)).regularization == "l2"
  if resolved == "l2":  # every row of every table, batch or not
    features = next(iter(make_dataset(prepared, "train", spec, 8)))
    squares = sum(float(np.sum(t.embeddings.numpy() ** 2))
                  for t in model.embedder.tables.values())
    assert float(model.embedder.penalty(features)) == pytest.approx(
        0.5 * expected * squares, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_lazy_l2_without_lazy_adam_is_refused(prepared, tmp_path, optimizer):
  config = training.TrainConfig(model="base", optimizer=optimizer, epochs=1,
                                **_small(regularization="lazy_l2"))
  with pytest.raises(ValueError, match=r"regularization 'lazy_l2' is "
                     r"applied by the lazy_adam optimizer; got --optimizer "
                     f"{optimizer}"):
    training.train(prepared, str(tmp_path / "m"), config)
  assert not (tmp_path / "m").exists()  # refused before anything is written


def test_initializer_options_reach_the_layers(prepared):
  spec, _ = load_feature_spec(prepared)
  config = training.TrainConfig(model="din", **_small(
      embeddings_initializer={"class_name": "RandomNormal",
                              "config": {"stddev": 1e-4}},
      kernel_initializer="glorot_normal", behaviour_sum_in_tower=True))
  model = training.build_model(spec, config)
  model.build_all()
  table = model.embedder.tables["item_id"].embeddings.numpy()
  assert table.std() == pytest.approx(1e-4, rel=0.1)
  dense = model.tower._dense
  assert dense[0].kernel_initializer.__class__.__name__ == "GlorotNormal"
  # One initializer instance per layer: same-shape kernels differ.
  first, second = (model.attention.first_kernel.numpy(),
                   model.tower._dense[0].kernel.numpy())
  assert not np.allclose(first[:4, :4], second[:4, :4])
  assert model.behaviour_sum_in_tower


@pytest.mark.parametrize("model,forced,expected", [
    ("base", None, False), ("din", None, True), ("dien", None, True),
    ("base", True, True), ("din", False, False)])
def test_behaviour_sum_follows_the_official_code_unless_forced(
    prepared, model, forced, expected):
  spec, _ = load_feature_spec(prepared)
  options = {} if forced is None else {"behaviour_sum_in_tower": forced}
  config = training.TrainConfig(model=model, **_small(**options))
  assert training.build_model(spec, config).behaviour_sum_in_tower == expected


@pytest.mark.parametrize("model", ["base", "din", "dien"])
@pytest.mark.parametrize("pooling", [None, "sum", "mean"])
def test_tower_behaviour_pooling_reaches_the_model(prepared, model, pooling):
  spec, _ = load_feature_spec(prepared)
  options = {"behaviour_sum_in_tower": True}
  if pooling:
    options["tower_behaviour_pooling"] = pooling
  config = training.TrainConfig(model=model, **_small(**options))
  built = training.build_model(spec, config)
  assert built.tower_behaviour_pooling == (pooling or "mean")


def test_dien_is_the_official_codes_unless_told_otherwise(prepared):
  spec, _ = load_feature_spec(prepared)
  model = training.build_model(spec,
                               training.TrainConfig(model="dien", **SMALL))
  assert model.evolution.cell.gate == "AUGRU_OFFICIAL"
  assert model.attention_type == "mlp"
  assert model.attention_unit.hidden_units == (8, 4)
  assert not hasattr(model, "attention_kernel")
  assert model.extractor.aux_reduction == "padded_mean"
  assert model.tower_input_normalization == "affine"
  assert model.tower_norm is not None
  assert model.behaviour_sum_in_tower
  assert model.tower_behaviour_pooling == "mean"
  paper = training.build_model(spec, training.TrainConfig(
      model="dien", **_small(gru_type="AUGRU", attention_type="bilinear",
                             aux_reduction="step_mean",
                             tower_input_normalization=None)))
  item_dim = sum(f.embedding_dim for f in spec.item_features)
  assert paper.evolution.cell.gate == "AUGRU"
  assert paper.attention_type == "bilinear"
  assert tuple(paper.attention_kernel.shape) == (4, item_dim)
  assert paper.extractor.aux_reduction == "step_mean"
  assert paper.tower_norm is None


def test_dien_logs_its_auxiliary_loss_in_training_only(prepared, tmp_path):
  # Evaluation has no negatives: the auxiliary term is left out of the
  # validation logs rather than logged as 0.
  config = training.TrainConfig(model="dien", epochs=1, refit=False,
                                validation_fraction=0.3, **SMALL)
  model_dir = str(tmp_path / "dien")
  _, logs = training.train(prepared, model_dir, config)
  assert "aux_loss" in logs and logs["aux_loss"][0] > 0.1
  assert "val_aux_loss" not in logs
  # "loss" is a mean over batches and "logloss" over examples, which differ
  # by the last, smaller batch's weight: close, not equal. An auxiliary term
  # (above 0.1) would show.
  assert logs["loss"][0] == pytest.approx(
      logs["logloss"][0] + logs["l2_loss"][0] + logs["aux_loss"][0], abs=0.01)
  assert logs["val_loss"][0] == pytest.approx(
      logs["val_logloss"][0] + logs["val_l2_loss"][0], abs=0.01)
  saved = json.load(open(os.path.join(model_dir, "train_config.json")))
  assert "val_aux_loss" not in saved["history"]
  assert saved["history"]["aux_loss"] == pytest.approx(logs["aux_loss"])


def test_train_records_the_vocabularies_before_it_trains(prepared, tmp_path):
  model_dir = str(tmp_path / "base")
  at_start = []

  class ReadRecord(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      with open(os.path.join(model_dir, "train_config.json")) as f:
        at_start.append(json.load(f))

  config = training.TrainConfig(model="base", epochs=1,
                                validation_fraction=0.0, **SMALL)
  training.train(prepared, model_dir, config, callbacks=[ReadRecord()])
  spec, _ = load_feature_spec(prepared)
  names = [f.name for f in spec.user_features + spec.item_features]
  # SHA-256 of each vocabulary's ids (index, id, count rows) in index
  # order, by hand: the counts do not matter, the ids' order does.
  expected = {}
  for name in names:
    with open(vocabulary_path(prepared, name)) as f:
      rows = [line.split("\t") for line in f.read().splitlines()]
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(len(rows) - 1)]
    expected[name] = hashlib.sha256(
        "".join(r[1] + "\n" for r in rows).encode()).hexdigest()
  assert at_start[0]["vocabularies"] == expected
  assert at_start[0]["config"]["model_options"] == json.loads(
      json.dumps(OPTIONS))
  saved = json.load(open(os.path.join(model_dir, "train_config.json")))
  assert saved["vocabularies"] == expected
  assert trainer.vocabulary_fingerprints(prepared, spec) == expected


def test_a_seed_repeats_its_run_whatever_ran_before_in_the_process(
    prepared, tmp_path):
  # `tfrs-din run` trains several models in one process: each model's data
  # order and draws must depend on its seed only, not on the earlier runs.
  config = training.TrainConfig(model="din", epochs=1, seed=3, refit=False,
                                **SMALL)
  runs = [training.train(prepared, str(tmp_path / f"m{i}"), config)[1]
          for i in range(2)]
  other = training.train(prepared, str(tmp_path / "other"),
                         dataclasses.replace(config, seed=4))[1]
  assert runs[0]["loss"] == runs[1]["loss"]
  assert runs[0]["val_gauc"] == runs[1]["val_gauc"]
  assert other["loss"] != runs[0]["loss"]
