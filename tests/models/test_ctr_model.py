"""What fit/evaluate log: epoch means of the objective and of each term."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.features import CategoricalFeature, FeatureSpec
from tfrs_din.models import BaseModel, DIENModel, DINModel
from tfrs_din.models.ctr_model import behaviour_sum_features

SMALL = dict(mlp_units=(8, 4), activation="prelu")


def _batches(data, size=32, count=4):
  """`count` full batches of the training examples (equal sizes)."""
  arrays = {k: v[:size * count] for k, v in data.arrays.items()
            if k != "is_test"}
  return tf.data.Dataset.from_tensor_slices(arrays).batch(size)


def test_evaluate_reports_epoch_means_of_loss_and_penalty(small_data):
  # MBA: a penalty that differs between batches (the dense L2's does not).
  model = DINModel(small_data.spec, attention_units=(8, 4),
                   regularization="mba", **SMALL)
  model.compile(tf.keras.optimizers.Adam(1e-3))
  ds = _batches(small_data)
  logs = model.evaluate(ds, return_dict=True, verbose=0)
  per_batch = [model.loss_terms(b, training=False) for b in ds]
  logloss = np.mean([t["logloss"].numpy() for t in per_batch])
  penalty = np.mean([t["mba_loss"].numpy() for t in per_batch])
  assert penalty > 0
  assert logs["mba_loss"] == pytest.approx(penalty, rel=1e-5)
  assert logs["logloss"] == pytest.approx(logloss, rel=1e-5)
  # The mean over batches, not the last batch's value.
  assert logs["loss"] == pytest.approx(logloss + penalty, rel=1e-5)
  # ... which differs from a single batch's value (the batches differ).
  totals = [float(t["logloss"] + t["mba_loss"]) for t in per_batch]
  assert np.ptp(totals) > 100 * 1e-5 * logs["loss"]
  assert "aux_loss" not in logs and "regularization_loss" not in logs


def test_fit_logs_the_auxiliary_loss_and_the_whole_objective(small_data):
  model = DIENModel(small_data.spec, gru_units=4, **SMALL)
  model.compile(tf.keras.optimizers.Adam(1e-3))
  validation = _batches(small_data, count=2)
  logs = model.fit(_batches(small_data), epochs=2, verbose=0,
                   validation_data=validation).history
  # The default penalty on tables this small: the dense L2.
  assert set(logs) >= {"loss", "logloss", "l2_loss", "aux_loss", "auc"}
  for epoch in range(2):
    terms = logs["logloss"][epoch] + logs["l2_loss"][epoch] + logs[
        "aux_loss"][epoch]
    assert logs["loss"][epoch] == pytest.approx(terms, rel=1e-5)
    # alpha * L_aux of two log losses: near 2 log 2 at the start.
    assert 0.5 < logs["aux_loss"][epoch] < 2.0
  # Evaluation has no negatives: no auxiliary term, and none logged as 0.
  assert "val_aux_loss" not in logs
  for epoch in range(2):
    assert logs["val_loss"][epoch] == pytest.approx(
        logs["val_logloss"][epoch] + logs["val_l2_loss"][epoch], rel=1e-5)
  evaluated = model.evaluate(validation, return_dict=True, verbose=0)
  assert "aux_loss" not in evaluated
  assert evaluated["loss"] == pytest.approx(
      evaluated["logloss"] + evaluated["l2_loss"], rel=1e-5)


def test_behaviour_sum_reaches_the_tower(small_data):
  features = small_data.features(slice(0, 6))
  dims = sum(f.embedding_dim for f in small_data.spec.item_features)
  plain = DINModel(small_data.spec, attention_units=(8, 4),
                   behaviour_sum_in_tower=False, **SMALL)
  summed = DINModel(small_data.spec, attention_units=(8, 4), **SMALL)
  plain(features), summed(features)
  width = lambda m: m.tower._dense[0].kernel.shape[0]
  assert width(summed) == width(plain) + 2 * dims
  embedded = summed.embedder(features)
  total, product = behaviour_sum_features(embedded)
  mask = tf.cast(embedded.mask, tf.float32)[..., tf.newaxis]
  expected = tf.reduce_sum(embedded.history * mask, axis=1)
  np.testing.assert_allclose(total[:, 0].numpy(), expected.numpy(), atol=1e-6)
  np.testing.assert_allclose(product[:, 0].numpy(),
                             (embedded.candidate[:, 0] * expected).numpy(),
                             atol=1e-6)
  assert DINModel.from_config(summed.get_config()).behaviour_sum_in_tower
  # "mean": s divided by the number of valid behaviours (0 if there are none).
  mean, mean_product = behaviour_sum_features(embedded, "mean")
  count = tf.reduce_sum(mask, axis=1)
  expected_mean = np.where(count > 0, expected / np.maximum(count, 1), 0.0)
  np.testing.assert_allclose(mean[:, 0].numpy(), expected_mean, atol=1e-6)
  np.testing.assert_allclose(mean_product[:, 0].numpy(),
                             embedded.candidate[:, 0].numpy() * expected_mean,
                             atol=1e-6)
  # "mean" is the default; "sum" (the official code's) survives a round trip.
  assert summed.tower_behaviour_pooling == "mean"
  official = DINModel(small_data.spec, attention_units=(8, 4),
                      tower_behaviour_pooling="sum", **SMALL)
  assert DINModel.from_config(
      official.get_config()).tower_behaviour_pooling == "sum"
  with pytest.raises(ValueError, match="tower_behaviour_pooling"):
    DINModel(small_data.spec, tower_behaviour_pooling="max", **SMALL)
  # The base model's interest is already the sum: only e_A * s is added.
  plain_base = BaseModel(small_data.spec, **SMALL)
  base = BaseModel(small_data.spec, behaviour_sum_in_tower=True, **SMALL)
  plain_base(features), base(features)
  assert width(base) == width(plain_base) + dims


def _tower_input(model, features):
  """The tower's input as `forward` builds it (before any normalisation)."""
  captured = {}
  norm = model.tower_norm
  original = norm.call

  def spy(x, *args, **kwargs):
    captured["x"] = x
    return original(x, *args, **kwargs)

  norm.call = spy
  try:
    model.forward(features, training=False)
  finally:
    norm.call = original
  return captured["x"].numpy()


def test_affine_tower_normalization_is_the_official_codes_scale_and_shift(
    small_data):
  model = DINModel(small_data.spec, attention_units=(8, 4),
                   tower_input_normalization="affine", **SMALL)
  model.compile(tf.keras.optimizers.Adam(0.05))
  model.fit(_batches(small_data), epochs=1, verbose=0)
  norm = model.tower_norm
  # Trained in inference mode, as tf.layers.batch_normalization without
  # training=True: statistics stay at (0, 1), gamma and beta learn.
  np.testing.assert_array_equal(norm.moving_mean.numpy(), 0.0)
  np.testing.assert_array_equal(norm.moving_variance.numpy(), 1.0)
  assert np.abs(norm.gamma.numpy() - 1.0).max() > 1e-3
  features = small_data.features(slice(0, 8))
  x = _tower_input(model, features)
  expected = norm.gamma.numpy() * x / np.sqrt(1.0 + 1e-3) + norm.beta.numpy()
  np.testing.assert_allclose(norm(x, training=False), expected, rtol=1e-5,
                             atol=1e-6)


def test_batch_tower_normalization_learns_statistics_and_serves_with_them(
    small_data):
  model = DINModel(small_data.spec, attention_units=(8, 4),
                   tower_input_normalization="batch", **SMALL)
  model.compile(tf.keras.optimizers.Adam(1e-3))
  model.fit(_batches(small_data), epochs=1, verbose=0)
  norm = model.tower_norm
  assert np.abs(norm.moving_mean.numpy()).max() > 1e-4
  features = small_data.features(slice(0, 8))
  x = _tower_input(model, features)
  expected = ((x - norm.moving_mean.numpy())
              / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
              * norm.gamma.numpy() + norm.beta.numpy())
  np.testing.assert_allclose(norm(x, training=False), expected, rtol=1e-4,
                             atol=1e-5)
  # Predictions use the moving statistics: one row alone scores the same.
  alone = model({k: v[:1] for k, v in features.items()}, training=False)
  np.testing.assert_allclose(alone[0], model(features, training=False)[0],
                             rtol=1e-5)


def test_tower_input_normalization_is_validated(small_data):
  with pytest.raises(ValueError, match="tower_input_normalization"):
    BaseModel(small_data.spec, tower_input_normalization="layer")


def _spec(users, items):
  return FeatureSpec(
      user_features=[CategoricalFeature("user_id", users, 4)],
      item_features=[CategoricalFeature("item_id", items, 4)])


@pytest.mark.parametrize("users, items, resolved", [
    (150_000, 100_000, "l2"), (150_000, 100_001, "lazy_l2"),
    (500_000, 600_000, "lazy_l2")])
def test_auto_regularisation_is_the_dense_l2_up_to_the_threshold(
    users, items, resolved):
  # 250,000 embedding rows in all, not more, take the dense L2.
  model = BaseModel(_spec(users, items))
  assert model.regularization == model.embedder.regularization == resolved
  assert model.get_config()["regularization"] == resolved
  assert model.l2 == 1e-3
  assert BaseModel.from_config(model.get_config()).regularization == resolved


def test_a_dense_l2_on_large_tables_is_warned_about(caplog):
  with caplog.at_level(logging.WARNING):
    BaseModel(_spec(500_000, 600_000), regularization="l2")
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING]
  assert len(warnings) == 1
  assert warnings[0].startswith("regularization='l2' penalises all 1,100,000 "
                                "embedding rows at every step")
  assert "regularization='lazy_l2'" in warnings[0]
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    BaseModel(_spec(150_000, 100_000), regularization="l2")  # at the limit
    for quiet in ("auto", "lazy_l2", "mba", None):
      BaseModel(_spec(500_000, 600_000), regularization=quiet)
  assert not [r for r in caplog.records if "penalises all" in r.getMessage()]
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    BaseModel(_spec(150_000, 100_001), regularization="l2")
  assert [r for r in caplog.records if "penalises all 250,001" in
          r.getMessage()]
