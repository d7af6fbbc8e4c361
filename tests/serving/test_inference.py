"""The exports' fast `score_candidates` (tfrs_din.serving.inference) gives the
model's probabilities, with and without XLA, for every covered option."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.data.synthetic import SyntheticConfig, generate
from tfrs_din.layers import LocalActivationUnit
from tfrs_din.models import BaseModel, DIENModel, DINModel
from tfrs_din.serving import inference

TOL = dict(rtol=1e-5, atol=2e-6)
MAX_HISTORY = 12


@pytest.fixture(scope="module")
def spec():
  return generate(SyntheticConfig(num_users=30, max_history=MAX_HISTORY,
                                  embedding_dim=6, seed=3)).spec


def _request(spec, batch, num, width, lengths, seed=0):
  rng = np.random.default_rng(seed)
  items, cats = (f.vocab_size for f in spec.item_features)
  features = {
      "user_id": rng.integers(2, spec.user_features[0].vocab_size, batch),
      "hist_item_id": rng.integers(2, items, (batch, width)),
      "hist_category_id": rng.integers(2, cats, (batch, width)),
      "hist_length": np.asarray(lengths)}
  # Padded positions hold ids the model never looks up (here: out of range).
  pad = np.arange(width)[None] >= np.asarray(lengths)[:, None]
  features["hist_item_id"][pad] = items + 7
  candidates = {"item_id": rng.integers(2, items, (batch, num)),
                "category_id": rng.integers(2, cats, (batch, num))}
  as_tensors = lambda d: {k: tf.constant(v, tf.int64) for k, v in d.items()}  # noqa: E731
  return as_tensors(features), as_tensors(candidates)


def _trained_looking(model, spec):
  """Builds the model and gives every inference statistic, bias and slope a
  non-trivial value (fresh ones are 0 / 1)."""
  model.score_candidates(*_request(spec, 1, 2, 3, [2]))
  for v in model.variables:
    name = v.name
    if "moving_variance" in name:
      v.assign(tf.random.uniform(v.shape, 0.2, 3.0, seed=1))
    elif any(k in name for k in ("moving_mean", "alpha", "gamma", "beta",
                                 "bias", "embedding")):
      v.assign(tf.random.normal(v.shape, stddev=0.5, seed=2))
  return model


# The constructors' defaults are the shipped models (DIEN as the official
# code: AUGRU_OFFICIAL, the MLP attention, an affine tower input; mean-pooled
# s); the other entries cover every other option value.
CONFIGS = {
    "din": (DINModel, dict(attention_units=(8, 4))),
    "din_prelu_one_layer": (DINModel, dict(
        attention_units=(8,), activation="prelu",
        attention_activation="prelu")),
    "din_softmax_batch_norm_no_sum": (DINModel, dict(
        attention_units=(8, 4, 3), attention_normalization="softmax",
        attention_activation="sigmoid", tower_input_normalization="batch",
        behaviour_sum_in_tower=False)),
    "din_sum_summary_affine": (DINModel, dict(
        attention_units=(8, 4), tower_behaviour_pooling="sum",
        tower_input_normalization="affine")),
    "dien": (DIENModel, dict(gru_units=5)),
    "dien_paper": (DIENModel, dict(
        gru_units=5, gru_type="AUGRU", attention_type="bilinear",
        tower_input_normalization=None, tower_behaviour_pooling="sum")),
    "dien_aigru": (DIENModel, dict(gru_units=5, gru_type="AIGRU",
                                   attention_type="bilinear")),
    "dien_agru_no_sum": (DIENModel, dict(
        gru_units=5, gru_type="AGRU", behaviour_sum_in_tower=False)),
    "dien_pooled_states": (DIENModel, dict(
        gru_units=5, attention_pooling_in_tower="states")),
    "dien_pooled_behaviours_bilinear": (DIENModel, dict(
        gru_units=5, attention_type="bilinear",
        attention_pooling_in_tower="behaviours")),
    "dien_pooled_din": (DIENModel, dict(
        gru_units=5, attention_units=(6, 3),
        attention_pooling_in_tower="din")),
    "dien_prelu_batch_norm": (DIENModel, dict(
        gru_units=5, activation="prelu", tower_input_normalization="batch")),
    "base": (BaseModel, dict()),
    "base_mean_affine": (BaseModel, dict(
        pooling="mean", tower_input_normalization="affine",
        activation="prelu")),
    "base_no_sum_batch_norm": (BaseModel, dict(
        behaviour_sum_in_tower=False, tower_behaviour_pooling="sum",
        tower_input_normalization="batch")),
}
XLA_CONFIGS = ("din", "din_softmax_batch_norm_no_sum", "dien", "dien_paper",
               "dien_aigru", "dien_pooled_states", "base",
               "base_no_sum_batch_norm")


# XLA compiles slowly: a subset covers every code path under it.
@pytest.mark.parametrize("config,jit_compile", [
    (c, False) for c in sorted(CONFIGS)] + [(c, True) for c in XLA_CONFIGS])
def test_scorer_gives_the_models_probabilities(config, jit_compile, spec):
  cls, kwargs = CONFIGS[config]
  tf.keras.utils.set_random_seed(0)
  model = _trained_looking(cls(spec, mlp_units=(8, 4), **kwargs), spec)
  assert inference.supports(model)
  scorer = tf.function(inference.Scorer(model, jit_compile).__call__)
  # Histories of every length (none, full, longer than max_history); N and
  # B off the XLA buckets; one user alone.
  for batch, num, width, lengths in ((3, 7, MAX_HISTORY, [5, 0, 12]),
                                     (1, 9, 15, [15]), (2, 1, 4, [1, 3])):
    features, candidates = _request(spec, batch, num, width, lengths)
    expected = model.score_candidates(features, candidates).numpy()
    got = scorer(features, candidates).numpy()
    assert got.shape == (batch, num)
    np.testing.assert_allclose(got, expected, **TOL)
    assert np.ptp(expected) > 1e-3


@pytest.mark.parametrize("jit_compile", [False, True])
def test_scorer_refuses_indices_outside_the_vocabulary(jit_compile, spec):
  tf.keras.utils.set_random_seed(0)
  model = DINModel(spec, mlp_units=(8, 4), attention_units=(8, 4))
  scorer = inference.Scorer(model, jit_compile)
  features, candidates = _request(spec, 1, 3, 4, [4])
  bad = dict(candidates, item_id=candidates["item_id"] + 10_000)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"candidate_item_id: expected indices in \[0, "):
    scorer(features, bad)
  bad = dict(features, user_id=-features["user_id"])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"user_id: expected indices in \[0, "):
    scorer(bad, candidates)


def test_uncovered_models_keep_the_models_path(spec):
  tf.keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = DINModel(spec)
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  assert not inference.supports(model)
  with pytest.raises(ValueError, match="not covered"):
    inference.Scorer(model)


@pytest.mark.parametrize("normalization", [None, "softmax"])
@pytest.mark.parametrize("activation", ["dice", "prelu"])
def test_dense_attention_scores_equal_the_activation_unit(activation,
                                                          normalization):
  tf.keras.utils.set_random_seed(4)
  unit = LocalActivationUnit((6, 3), activation=activation,
                             normalization=normalization)
  query = tf.random.normal([2, 5, 4])
  keys = tf.random.normal([2, 7, 4])
  mask = tf.sequence_mask([3, 7], 7)
  unit(query, keys, mask=mask)
  for v in unit.variables:
    if "moving_variance" in v.name:
      v.assign(tf.random.uniform(v.shape, 0.2, 3.0))
    elif "moving_mean" in v.name or "alpha" in v.name or "bias" in v.name:
      v.assign(tf.random.normal(v.shape))
  _, expected = unit(query, keys, mask=mask, return_weights=True,
                     training=False)
  keys = tf.where(mask[..., tf.newaxis], keys, 0.0)
  got = inference.attention_scores(unit, query, keys, mask)
  # The raw scores are the unit's own, masked afterwards.
  raw = unit.pair_scores(query, tf.reshape(keys, [-1, 4]),
                         tf.repeat(tf.range(2, dtype=tf.int64), 7),
                         training=False)                        # [P, N]
  np.testing.assert_allclose(
      unit.inference_scores(query, keys),
      tf.transpose(tf.reshape(raw, [2, 7, 5]), [0, 2, 1]), rtol=1e-5,
      atol=1e-6)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert np.all(got.numpy()[0, :, 3:] == 0.0)


@pytest.mark.parametrize("normalization", [None, "softmax"])
def test_pooling_in_blocks_equals_pooling_at_once(normalization):
  tf.keras.utils.set_random_seed(5)
  unit = LocalActivationUnit((6, 3), activation="dice",
                             normalization=normalization)
  query, keys = tf.random.normal([1, 5, 4]), tf.random.normal([1, 8, 4])
  unit(query, keys)
  for length in (0, 1, 3, 7, 8):   # none, in the first block, block edges
    mask = tf.sequence_mask([length], 8)
    masked = tf.where(mask[..., tf.newaxis], keys, 0.0)
    expected = tf.matmul(
        inference.attention_scores(unit, query, masked, mask), masked)
    got = inference.pooled_in_blocks(unit, query, keys, length, block=3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
