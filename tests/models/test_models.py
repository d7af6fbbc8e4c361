import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.features import HISTORY_LENGTH
from tfrs_din.models import MODELS, BaseModel, DIENModel, DINModel
import reference as ref

SMALL = dict(mlp_units=(8, 4), activation="dice")
# The defaults (DIEN as the official code has it), and the other choices:
# DIN with the official code's affine tower normalisation, DIEN as the paper
# writes it with a batch-normalised tower.
OPTIONS = {"base": {}, "din": dict(attention_units=(8, 4)),
           "dien": dict(gru_units=6, aux_hidden_units=(8, 4),
                        attention_units=(8, 4)),
           "din_official": dict(attention_units=(8, 4),
                                tower_input_normalization="affine"),
           "dien_paper": dict(gru_units=6, aux_hidden_units=(8, 4),
                              gru_type="AUGRU", attention_type="bilinear",
                              aux_reduction="step_mean",
                              tower_input_normalization="batch")}
ALL = ["base", "din", "dien", "din_official", "dien_paper"]


def _model(name, spec, **kwargs):
  model_class = MODELS[name.split("_")[0]]
  return model_class(spec, **SMALL, **OPTIONS[name], **kwargs)


def _trained(name, data, steps=3, **kwargs):
  model = _model(name, data.spec, **kwargs)
  model.compile(tf.keras.optimizers.Adam(0.01))
  model.fit(data.dataset("train", 64).take(steps), verbose=0)
  return model


@pytest.mark.parametrize("name", ["base", "din", "dien"])
def test_fit_reports_metrics_and_evaluate_reports_exact_gauc(name, small_data):
  model = _model(name, small_data.spec)
  model.compile(tf.keras.optimizers.Adam(0.01))
  history = model.fit(small_data.dataset("train", 64).take(4), verbose=0)
  # GAUC is not reported per training step unless asked for (it is O(epoch)).
  assert {"loss", "auc", "logloss"} <= set(history.history)
  assert "gauc" not in history.history
  result = model.evaluate(small_data.dataset("test", 64), return_dict=True,
                          verbose=0)
  test = small_data.arrays["is_test"]
  # Logits, not float32 probabilities, which tie where logits do not.
  logits = model.forward(small_data.features(test), training=False)[0][:, 0]
  expected = ref.gauc(small_data.arrays["user_id"][test],
                      small_data.arrays["label"][test], logits.numpy())
  assert result["gauc"] == pytest.approx(expected, abs=1e-6)
  as_list = model.evaluate(small_data.dataset("test", 64), verbose=0)
  assert as_list[model.metrics_names.index("gauc")] == pytest.approx(expected)
  probabilities = model(small_data.features(slice(0, 16))).numpy()
  assert probabilities.shape == (16,)
  assert np.all((probabilities > 0) & (probabilities < 1))


def test_gauc_in_training_reports_the_epoch_gauc(small_data):
  # PReLU and a zero learning rate: training-mode scores equal predictions.
  model = DINModel(small_data.spec, mlp_units=(8, 4), activation="prelu",
                   attention_units=(8, 4), attention_activation="prelu",
                   gauc_in_training=True)
  model.compile(tf.keras.optimizers.Adam(0.0))
  train = small_data.dataset("train", 64)
  history = model.fit(train, epochs=2, verbose=0)
  selected = ~small_data.arrays["is_test"]
  p = model.predict(train, verbose=0)
  expected = ref.gauc(small_data.arrays["user_id"][selected],
                            small_data.arrays["label"][selected], p)
  assert len(history.history["gauc"]) == 2
  assert history.history["gauc"][-1] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_padding_does_not_leak_and_inference_is_batch_independent(
    name, small_data):
  model = _trained(name, small_data)
  features = small_data.features(slice(0, 32))
  expected = model(features, training=False).numpy()
  garbage = dict(features)
  length = features[HISTORY_LENGTH].numpy()
  for key in ("hist_item_id", "hist_category_id"):
    ids = features[key].numpy().copy()
    pad = np.arange(ids.shape[1])[None, :] >= length[:, None]
    ids[pad] = 7
    garbage[key] = tf.constant(ids)
  np.testing.assert_allclose(model(garbage, training=False), expected,
                             rtol=1e-5, atol=1e-6)
  one_by_one = [float(model({k: v[i:i + 1] for k, v in features.items()},
                            training=False)[0]) for i in range(0, 32, 7)]
  np.testing.assert_allclose(one_by_one, expected[::7], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_score_candidates_equals_tiled_rows(name, small_data):
  model = _trained(name, small_data)
  users = small_data.features(slice(0, 3))
  rng = np.random.default_rng(0)
  cand_items = rng.integers(2, small_data.spec.item_features[0].vocab_size,
                            size=(3, 5))
  cand_cats = rng.integers(2, small_data.spec.item_features[1].vocab_size,
                           size=(3, 5))
  scores = model.score_candidates(
      users, {"item_id": tf.constant(cand_items),
              "category_id": tf.constant(cand_cats)}).numpy()
  tiled = {k: tf.repeat(v, 5, axis=0) for k, v in users.items()}
  tiled["item_id"] = tf.constant(cand_items.reshape(-1))
  tiled["category_id"] = tf.constant(cand_cats.reshape(-1))
  np.testing.assert_allclose(scores.reshape(-1), model(tiled, training=False),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["din", "dien", "dien_paper"])
def test_attention_weights_are_zero_at_padding(name, small_data):
  model = _trained(name, small_data)
  features = small_data.features(slice(0, 20))
  weights = model.attention_weights(features).numpy()
  assert weights.shape == (20, small_data.spec.max_history)
  length = features[HISTORY_LENGTH].numpy()
  pad = np.arange(weights.shape[1])[None, :] >= length[:, None]
  np.testing.assert_array_equal(weights[pad], 0.0)
  if name.startswith("dien"):  # masked softmax over the valid steps
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-5)


def test_dien_auxiliary_loss_enters_training_only(small_data):
  model = _trained("dien", small_data)
  features = small_data.features(slice(0, 32))
  logits, inter = model.forward(features, training=False)
  target = tf.keras.losses.BinaryCrossentropy(from_logits=True)(
      features["label"], logits[:, 0])
  expected_eval = float(target + model.embedder.penalty(features))
  assert float(model.compute_loss(features, training=False)) == pytest.approx(
      expected_eval, rel=1e-5)
  aux = float(model.auxiliary_loss(features, inter, training=False))
  assert aux > 0.1
  without_negatives = {k: v for k, v in features.items()
                       if not k.startswith("neg_")}
  model(without_negatives)  # prediction needs no negatives
  with pytest.raises(ValueError, match="neg_hist_item_id"):
    model.compute_loss(without_negatives, training=True)
  no_aux = _model("dien", small_data.spec, aux_loss_weight=0.0)
  assert float(no_aux.auxiliary_loss(features, inter)) == 0.0


def test_regularization_options_change_the_loss_as_documented(small_data):
  features = small_data.features(slice(0, 32))
  losses = {}
  for reg in (None, "mba", "l2"):
    tf.keras.utils.set_random_seed(5)
    model = _model("din", small_data.spec, regularization=reg, l2=0.5)
    losses[reg] = (float(model.compute_loss(features)),
                   float(model.embedder.penalty(features)))
  assert losses[None][1] == 0.0
  assert 0 < losses["mba"][1] < losses["l2"][1]
  for reg in ("mba", "l2"):
    assert losses[reg][0] == pytest.approx(losses[None][0] + losses[reg][1],
                                           rel=1e-5)
  with pytest.raises(ValueError, match="regularization"):
    _model("base", small_data.spec, regularization="l1")


def test_lazy_l2_is_applied_by_lazy_adam_and_adds_no_loss_term(small_data):
  from tfrs_din.optimizers import LazyAdam
  features = small_data.features(slice(0, 32))
  losses = {}
  for reg in (None, "lazy_l2"):  # built on the same seed: the same weights
    tf.keras.utils.set_random_seed(5)
    model = _model("din", small_data.spec, regularization=reg, l2=0.5)
    losses[reg] = float(model.compute_loss(features))
    if reg is None:
      plain = model
  lazy = model
  assert float(lazy.embedder.penalty(features)) == 0.0
  assert losses["lazy_l2"] == pytest.approx(losses[None], rel=1e-6)
  with pytest.raises(ValueError, match=r"applied by tfrs_din\.optimizers\."
                     "LazyAdam"):
    lazy.compile(tf.keras.optimizers.Adam(0.01))
  with pytest.raises(ValueError, match="differs from the model's l2"):
    lazy.compile(LazyAdam(0.01, row_l2=0.3))

  def fit(model):
    model.compile(LazyAdam(0.01, row_l2_every=2))
    table = model.embedder.tables["item_id"].embeddings
    before = table.numpy()
    history = model.fit(small_data.dataset("train", 64).take(4), verbose=0)
    return model.optimizer, before, table.numpy(), history.history

  optimizer, before, after, logs = fit(lazy)
  assert optimizer.row_l2 == 0.5
  assert "lazy_l2_loss" not in logs and "l2_loss" not in logs
  _, plain_before, plain_after, _ = fit(plain)
  # Item rows no batch held: left alone without regularisation; with
  # lazy_l2 (v = 0 there) shrunk by lr per step, in two shrinks of 2 steps,
  # down to zero and not past it.
  unused = np.all(plain_after == plain_before, axis=1)
  assert unused.sum() > 10
  np.testing.assert_allclose(
      after[unused],
      np.sign(before[unused]) * np.maximum(np.abs(before[unused]) - 0.04, 0),
      atol=1e-6)
  assert (after[unused] == 0).mean() > 0.2


@pytest.mark.parametrize("name", ["din", "dien"])
def test_dense_l2_through_lazy_adam_trains_as_through_keras_adam(
    name, small_data, monkeypatch):
  # "l2" makes the tables' gradients dense: LazyAdam updates them in one
  # fused XLA kernel (every dense gradient, for this test), Keras' Adam in
  # its unfused ops. Same seed, same batches: the same training.
  from tfrs_din import optimizers
  from tfrs_din.optimizers import LazyAdam
  monkeypatch.setattr(optimizers, "FUSED_DENSE_MIN_ELEMENTS", 0)
  features = small_data.features(slice(0, 32))
  results = {}
  for optimizer in (LazyAdam, tf.keras.optimizers.Adam):
    tf.keras.utils.set_random_seed(5)
    model = _model(name, small_data.spec, regularization="l2", l2=0.05)
    model.compile(optimizer(0.01))
    history = model.fit(small_data.dataset("train", 64).take(4), verbose=0)
    table = model.embedder.tables["item_id"].embeddings.numpy()
    results[optimizer] = (model(features).numpy(), table, history.history)
  (lazy_scores, lazy_table, lazy_logs), (scores, table, logs) = results.values()
  assert model.optimizer.__class__ is tf.keras.optimizers.Adam
  np.testing.assert_allclose(lazy_table, table, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(lazy_scores, scores, rtol=1e-4, atol=1e-5)
  assert lazy_logs["l2_loss"][0] == pytest.approx(logs["l2_loss"][0], rel=1e-5)
  assert lazy_logs["l2_loss"][0] > 0


@pytest.mark.parametrize("name", ALL)
def test_keras_format_round_trip_gives_identical_predictions(
    name, small_data, tmp_path):
  model = _trained(name, small_data)
  features = small_data.features(slice(0, 16))
  expected = model(features, training=False).numpy()
  path = str(tmp_path / f"{name}.keras")
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  assert type(loaded) is type(model)
  np.testing.assert_allclose(loaded(features, training=False), expected,
                             rtol=1e-6, atol=1e-7)
  assert loaded.get_config() == model.get_config()


def test_weights_checkpoint_round_trip(small_data, tmp_path):
  model = _trained("dien", small_data)
  features = small_data.features(slice(0, 16))
  path = str(tmp_path / "ckpt")
  tf.train.Checkpoint(model=model).write(path)
  clone = DIENModel.from_config(model.get_config())
  clone.build_all()
  tf.train.Checkpoint(model=clone).read(path).assert_existing_objects_matched()
  np.testing.assert_allclose(clone(features), model(features), rtol=1e-6)


def test_options_of_the_papers_are_accepted(small_data):
  features = small_data.features(slice(0, 8))
  for model in (
      DINModel(small_data.spec, activation="prelu", attention_activation="prelu",
               attention_normalization="softmax", dropout=0.5, regularization=None),
      BaseModel(small_data.spec, pooling="mean", activation="prelu"),
      DIENModel(small_data.spec, gru_type="AIGRU", gru_units=4),
      DIENModel(small_data.spec, gru_type="AGRU", gru_units=4),
      DIENModel(small_data.spec, gru_type="AUGRU", gru_units=4,
                attention_type="bilinear", aux_reduction="step_mean",
                tower_input_normalization=None)):
    assert model(features).shape == (8,)


def test_the_constructors_hold_the_shipped_defaults(small_data):
  spec = small_data.spec
  for cls in (BaseModel, DINModel, DIENModel):
    config = cls(spec).get_config()
    # "auto": the dense L2 on tables this small, stored resolved.
    assert config["regularization"] == "l2" and config["l2"] == 1e-3
    assert config["tower_behaviour_pooling"] == "mean"
    assert config["mlp_units"] == (200, 80) and config["activation"] == "dice"
  din = DINModel(spec).get_config()
  assert din["behaviour_sum_in_tower"] and din["attention_units"] == (80, 40)
  assert din["tower_input_normalization"] is None
  dien = DIENModel(spec)
  config = dien.get_config()
  assert (config["gru_type"], config["attention_type"],
          config["aux_reduction"], config["tower_input_normalization"],
          config["gru_units"]) == ("AUGRU_OFFICIAL", "mlp", "padded_mean",
                                   "affine", 36)
  assert dien.evolution.cell.gate == "AUGRU_OFFICIAL"
  assert dien.extractor.aux_reduction == "padded_mean"
  assert dien.tower_norm is not None
  assert not BaseModel(spec).get_config()["behaviour_sum_in_tower"]


@pytest.mark.parametrize("cls, removed", [
    (DINModel, "attention_padded_statistics"),
    (DINModel, "attention_initial_weight"),
    (DIENModel, "attention_initializer"), (DIENModel, "attention")])
def test_removed_options_are_refused(cls, removed, small_data):
  assert removed not in cls(small_data.spec).get_config()
  with pytest.raises(TypeError, match=removed):
    cls(small_data.spec, **{removed: 1.0})
