"""`tfrs_din.training.train`: the schedule is chosen on validation users,
the best epoch is kept, and the test split is never read."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din import training
from tfrs_din.data.pipeline import in_holdout, load_feature_spec, make_dataset
from prepared_log import prepared_log
from tfrs_din.data.synthetic import SyntheticConfig
import reference as ref

SMALL = dict(batch_size=64, mlp_units=(8, 4), attention_units=(8, 4),
             activation="prelu", attention_activation="prelu", verbose=0)


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


@pytest.mark.parametrize("refit,zero", [(False, True), (True, True),
                                        (False, False)])
def test_refit_trains_the_held_out_users_for_the_chosen_epochs(
    prepared, tmp_path, refit, zero):
  # MBA: only a batch's rows move (a dense L2 would shrink the others too).
  config = training.TrainConfig(model="base", epochs=2, patience=2,
                                validation_fraction=0.3, refit=refit,
                                zero_held_out_users=zero,
                                regularization="mba", **SMALL)
  model_dir = str(tmp_path / "base")
  model, _ = training.train(prepared, model_dir, config)
  saved = json.load(open(os.path.join(model_dir, "train_config.json")))
  assert not os.path.exists(os.path.join(model_dir, training.SELECTION_FILE))
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
  elif zero:  # never in a training batch: zero from the start, and still
    assert "refit_history" not in saved
    assert (table[held] == 0).all()
    assert (np.abs(initial[held]) > 0).all()
  else:  # never in a training batch: the random initial rows
    assert untouched.all()


def test_zero_held_out_users_zeroes_exactly_the_validation_users(prepared):
  spec, _ = load_feature_spec(prepared)
  config = training.TrainConfig(model="din", **SMALL)
  tf.keras.utils.set_random_seed(0)
  model = training.build_model(spec, config)
  model.build_all()
  before = model.embedder.tables["user_id"].embeddings.numpy()
  count = training.zero_held_out_users(model, 0.25, seed=3)
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


@pytest.mark.parametrize("regularization,l2,expected", [
    ("l2", None, 1e-3), ("mba", None, 0.01), ("l2", 0.05, 0.05),
    ("lazy_l2", None, 1e-3), (None, None, 0.0)])
def test_each_regulariser_has_its_own_default_lambda(prepared, regularization,
                                                      l2, expected):
  spec, _ = load_feature_spec(prepared)
  config = training.TrainConfig(model="din", regularization=regularization,
                                l2=l2, **SMALL)
  assert training.TrainConfig().regularization == "auto"
  model = training.build_model(spec, config)
  model.build_all()
  assert model.embedder.regularization == regularization
  assert model.l2 == pytest.approx(expected)
  if regularization == "l2":  # every row of every table, batch or not
    features = next(iter(make_dataset(prepared, "train", spec, 8)))
    squares = sum(float(np.sum(t.embeddings.numpy() ** 2))
                  for t in model.embedder.tables.values())
    assert float(model.embedder.penalty(features)) == pytest.approx(
        0.5 * expected * squares, rel=1e-5)


def test_a_dense_l2_on_large_tables_is_warned_about():
  from tfrs_din.features import CategoricalFeature, FeatureSpec
  def spec(users, items):
    return FeatureSpec(
        user_features=[CategoricalFeature("user_id", users, 4)],
        item_features=[CategoricalFeature("item_id", items, 4)])
  config = training.TrainConfig(regularization="l2")  # asked for explicitly
  warning = training.dense_l2_warning(spec(500_000, 600_000), config)
  assert warning.startswith("regularization='l2' penalises all 1,100,000 "
                            "embedding rows")
  assert "--regularization lazy_l2" in warning
  # The threshold: DENSE_L2_WARN_ROWS rows in all, not more.
  assert training.DENSE_L2_WARN_ROWS == 250_000
  assert training.dense_l2_warning(spec(150_000, 100_000), config) is None
  assert training.dense_l2_warning(spec(150_000, 100_001), config)
  for quiet in ("mba", "lazy_l2", "auto"):  # "auto" is lazy_l2 there
    assert training.dense_l2_warning(
        spec(500_000, 600_000), training.TrainConfig(regularization=quiet)
    ) is None


def test_auto_regularisation_is_the_dense_l2_up_to_the_threshold():
  from tfrs_din.features import CategoricalFeature, FeatureSpec
  def spec(users, items):
    return FeatureSpec(
        user_features=[CategoricalFeature("user_id", users, 4)],
        item_features=[CategoricalFeature("item_id", items, 4)])
  auto = training.TrainConfig()
  resolve = training.resolve_regularization
  assert resolve(spec(150_000, 100_000), auto) == "l2"
  assert resolve(spec(150_000, 100_001), auto) == "lazy_l2"
  # lazy_l2 is LazyAdam's: with another optimizer auto stays dense.
  adam = training.TrainConfig(optimizer="adam")
  assert resolve(spec(150_000, 100_001), adam) == "l2"
  assert training.dense_l2_warning(spec(150_000, 100_001), adam)
  for explicit in ("l2", "mba", "lazy_l2", None):
    assert resolve(spec(150_000, 100_001),
                   training.TrainConfig(regularization=explicit)) == explicit


def test_lazy_l2_without_lazy_adam_is_refused():
  config = training.TrainConfig(regularization="lazy_l2", optimizer="adam")
  with pytest.raises(ValueError, match=r"regularization \(--regularization\) "
                     "'lazy_l2' is applied by the lazy_adam optimizer"):
    training.check_data_options(config)


def test_initializer_options_reach_the_layers(prepared):
  spec, _ = load_feature_spec(prepared)
  config = training.TrainConfig(model="din", embedding_stddev=1e-4,
                                kernel_initializer="glorot_normal",
                                behaviour_sum_in_tower=True, **SMALL)
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
  config = training.TrainConfig(model=model, behaviour_sum_in_tower=forced,
                                **SMALL)
  assert training.build_model(spec, config).behaviour_sum_in_tower == expected


@pytest.mark.parametrize("model", ["base", "din", "dien"])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_tower_behaviour_pooling_reaches_the_model(prepared, model, pooling):
  spec, _ = load_feature_spec(prepared)
  config = training.TrainConfig(model=model, tower_behaviour_pooling=pooling,
                                behaviour_sum_in_tower=True, **SMALL)
  assert training.build_model(spec, config).tower_behaviour_pooling == pooling


def test_official_code_options_reach_the_dien_model(prepared):
  spec, _ = load_feature_spec(prepared)
  config = training.TrainConfig(
      model="dien", gru_type="AUGRU_OFFICIAL", dien_attention="mlp",
      aux_loss_reduction="user_sum", tower_input_normalization="affine",
      **SMALL)
  model = training.build_model(spec, config)
  assert model.evolution.cell.gate == "AUGRU_OFFICIAL"
  assert model.attention == "mlp"
  assert model.attention_unit.hidden_units == config.attention_units
  assert model.extractor.aux_reduction == "user_sum"
  assert model.tower_norm is not None
  assert model.tower_input_normalization == "affine"


@pytest.mark.parametrize("protocol,validation,expected", [
    ("next_item", "auto", "last"), ("labeled", "auto", "users"),
    ("next_item", "users", "users"), ("labeled", "last", "last")])
def test_validation_mirrors_the_protocols_test_split(protocol, validation,
                                                     expected):
  metadata = {"options": {"samples": {"protocol": protocol}}}
  config = training.TrainConfig(validation=validation)
  assert training.validation_split(config, metadata) == expected


def test_unknown_validation_is_refused():
  with pytest.raises(ValueError, match="--validation must be one of"):
    training.validation_split(training.TrainConfig(validation="time"), {})


def test_next_item_training_validates_on_each_users_last_target(tmp_path):
  data = prepared_log(tmp_path, SyntheticConfig(num_users=60, max_steps=20,
                                                seed=5),
                      "--protocol", "next_item", "--max_history", "6",
                      "--embedding_dim", "4")
  spec, _ = load_feature_spec(data)
  held = make_dataset(data, "train", spec, 64, holdout="only",
                      holdout_by="last")
  users = np.concatenate([b["user_id"].numpy() for b in held])
  config = training.TrainConfig(model="base", epochs=2, refit=False,
                                validation="auto", **{
      k: v for k, v in SMALL.items() if k != "attention_units"
      and k != "attention_activation"})
  model, logs = training.train(data, str(tmp_path / "model"), config)
  # The best validation GAUC (whose weights are kept) is the GAUC of the
  # final model on exactly the held-out targets.
  scores = np.concatenate([model(b, training=False).numpy() for b in held])
  labels = np.concatenate([b["label"].numpy() for b in held])
  assert max(logs["val_gauc"]) == pytest.approx(
      ref.gauc(users, labels, scores), abs=1e-5)


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
