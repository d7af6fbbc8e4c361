"""A batch's numbers do not depend on how far it is padded.

Batches are padded to their own longest history (rounded up to a bucket
boundary) instead of `max_history` (`FeatureSpec.parse_examples`,
`make_dataset`). That is only a saving if the models compute the same
thing: every padded position must be masked, and no statistic (Dice's,
batch normalisation's, the auxiliary loss's normaliser) may count padding.
Here the same examples, padded to their longest history and to
`max_history`, give the same predictions, loss terms and gradients for the
base model, DIN and DIEN under every tower option, every DIEN GRU type and
attention, with the auxiliary loss on (prepared negatives padded like the
history).
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.data.negatives import FreshNegatives
from tfrs_din.data.synthetic import SyntheticConfig, generate
from tfrs_din.features import (HISTORY_LENGTH, PADDING_INDEX,
                               CategoricalFeature, FeatureSpec)
from tfrs_din.models import BaseModel, DIENModel, DINModel
from tfrs_din.ops import build, fused_kernels

MAX_HISTORY = 20
TINY = dict(mlp_units=(8, 4), regularization="mba", seed=0)
TINY_BY_MODEL = {
    "base": {},
    "din": dict(attention_units=(6, 3)),
    "dien": dict(gru_units=5, aux_hidden_units=(6, 3), attention_units=(6, 3),
                 aux_loss_weight=1.0),
}
MODELS = {"base": BaseModel, "din": DINModel, "dien": DIENModel}
TOWER = [dict(behaviour_sum_in_tower=in_tower, tower_behaviour_pooling=pool,
              tower_input_normalization=norm)
         for in_tower, pool, norm in itertools.product(
             (True, False), ("sum", "mean"), (None, "batch", "affine"))]
DIEN_RECURRENCES = [dict(gru_type=gru, attention_type=attention)
                    for gru, attention in itertools.product(
                        ("AIGRU", "AGRU", "AUGRU", "AUGRU_OFFICIAL"),
                        ("bilinear", "mlp"))]
CASES = ([(name, tower) for name in MODELS for tower in TOWER]
         # Each GRU type x attention, with the tower options taking turns.
         + [("dien", dict(recurrence, **TOWER[i % len(TOWER)]))
            for i, recurrence in enumerate(DIEN_RECURRENCES)]
         + [("base", dict(pooling="mean")),
            ("din", dict(attention_normalization="softmax")),
            ("dien", dict(aux_reduction="step_mean")),
            ("dien", dict(attention_pooling_in_tower="states")),
            ("dien", dict(attention_pooling_in_tower="din")),
            ("dien", dict(attention_pooling_in_tower="behaviours",
                          attention_type="bilinear"))])


def _case_id(case):
  name, options = case
  return name + "-" + "-".join(f"{v}" for v in options.values())


@pytest.fixture(scope="module")
def data():
  return generate(SyntheticConfig(num_users=60, max_history=MAX_HISTORY,
                                  embedding_dim=4, seed=7))


def _batch(data, longest: int = 12, size: int = 24):
  """`size` training examples of varied lengths up to `longest` (below
  max_history, so that padding to the longest history differs), the first
  with an empty history; padded to max_history as the arrays hold them."""
  lengths = data.arrays[HISTORY_LENGTH]
  rows = np.flatnonzero((lengths <= longest) & ~data.arrays["is_test"])
  rows = rows[np.argsort(lengths[rows] + 0.5 * (rows % 7), kind="stable")]
  rows = rows[np.linspace(0, len(rows) - 1, size).astype(int)]
  features = {k: v[rows].copy() for k, v in data.arrays.items()
              if k != "is_test"}
  features[HISTORY_LENGTH][0] = 0
  for name, value in features.items():
    if value.ndim == 2:
      value[0] = PADDING_INDEX
  assert features[HISTORY_LENGTH].max() == longest
  return features


def _padded(features, width):
  """The same examples with every sequence cut (or padded) to `width`."""
  out = {}
  for name, value in features.items():
    if value.ndim == 2:
      value = value[:, :width]
      value = np.pad(value, [(0, 0), (0, width - value.shape[1])])
    out[name] = tf.constant(value)
  return out


def _loss_and_gradients(model, features):
  """Every loss term and every gradient of one training step's batch."""
  with tf.GradientTape() as tape:
    terms = model.loss_terms(features, training=True)
    total = tf.add_n(list(terms.values()))
  gradients = tape.gradient(total, model.trainable_variables)
  return terms, [None if g is None else tf.convert_to_tensor(g)
                 for g in gradients]


def _assert_same_numbers(model, wide, narrow):
  """Predictions first (training steps move Dice's and batch
  normalisation's moving statistics, which predictions read), then the
  loss terms and gradients, from the same weights."""
  np.testing.assert_allclose(model(narrow, training=False),
                             model(wide, training=False), rtol=1e-5,
                             atol=1e-7)
  terms, gradients = _loss_and_gradients(model, wide)
  terms_n, gradients_n = _loss_and_gradients(model, narrow)
  assert terms_n.keys() == terms.keys()
  for name in terms:
    np.testing.assert_allclose(terms_n[name], terms[name], rtol=1e-5,
                               atol=1e-7, err_msg=name)
  for variable, g, g_n in zip(model.trainable_variables, gradients,
                              gradients_n):
    assert (g is None) == (g_n is None), variable.name
    if g is not None:
      np.testing.assert_allclose(g_n, g, rtol=1e-5, atol=1e-7,
                                 err_msg=variable.name)
  return terms


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_padding_to_the_longest_history_changes_no_number(data, case):
  name, options = case
  features = _batch(data)
  model = MODELS[name](data.spec, **TINY, **TINY_BY_MODEL[name], **options)
  terms = _assert_same_numbers(
      model, _padded(features, MAX_HISTORY),
      _padded(features, int(features[HISTORY_LENGTH].max())))
  if name == "dien":   # the prepared negatives reached the loss
    assert float(terms["aux_loss"]) > 0


def test_any_width_from_the_longest_history_up_gives_the_same_numbers(data):
  """Widths between the longest history and max_history (bucket
  boundaries), and a batch of one-behaviour histories padded to width 1,
  where DIEN's auxiliary loss has no step."""
  features = _batch(data, longest=6)
  model = DIENModel(data.spec, **TINY, **TINY_BY_MODEL["dien"])
  for width in (6, 8, 16):
    _assert_same_numbers(model, _padded(features, MAX_HISTORY),
                         _padded(features, width))
  short = dict(features, **{HISTORY_LENGTH: np.minimum(
      features[HISTORY_LENGTH], 1)})
  terms = _assert_same_numbers(model, _padded(short, MAX_HISTORY),
                               _padded(short, 1))
  assert float(terms["aux_loss"]) == 0.0
  # The comparison notices a difference: cutting valid behaviours off (width
  # below the longest history) changes the numbers.
  with pytest.raises(AssertionError):
    _assert_same_numbers(model, _padded(features, MAX_HISTORY),
                         _padded(features, 5))


@pytest.mark.skipif(build.compiler() is None,
                    reason="no C++ compiler: the fused kernels cannot be built")
@pytest.mark.parametrize("gru_type", ["AIGRU", "AUGRU_OFFICIAL"])
def test_dien_with_the_fused_kernels_does_not_depend_on_the_padding(
    data, gru_type):
  """As `train_step` runs DIEN: the fused C++ GRU kernels, whose packed
  recurrence runs as many steps as the longest history."""
  features = _batch(data)
  model = DIENModel(data.spec, **TINY, **TINY_BY_MODEL["dien"],
                    gru_type=gru_type)
  with fused_kernels():
    _assert_same_numbers(model, _padded(features, MAX_HISTORY),
                         _padded(features, 12))


def test_fresh_negatives_do_not_depend_on_the_padding(data):
  """The draws of `FreshNegatives` for a batch padded to its longest history
  are those of the same batch padded to max_history, cut."""
  features = _batch(data)
  item = data.spec.item_features[0]
  table = np.stack([np.arange(item.vocab_size),
                    np.arange(item.vocab_size) % 5 + 2], axis=1)
  table[:2] = [[PADDING_INDEX] * 2, [1, 1]]   # the padding and OOV rows
  sampler = FreshNegatives(table, item.frequencies, ["item_id", "category_id"],
                           user_feature="user_id")
  key = tf.constant([3, 9], tf.int64)
  wide = sampler.sample(_padded(features, MAX_HISTORY), key)
  narrow = sampler.sample(_padded(features, 12), key)
  for name in ("neg_hist_item_id", "neg_hist_category_id"):
    assert narrow[name].shape == (24, 12)
    np.testing.assert_array_equal(narrow[name], wide[name][:, :12])
    np.testing.assert_array_equal(wide[name][:, 12:], PADDING_INDEX)
  valid = np.arange(12)[None] < features[HISTORY_LENGTH][:, None]
  assert (narrow["neg_hist_item_id"].numpy()[valid] >= 2).all()


def _example(history):
  ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))
  feature = {"user_id": ints([2]), "item_id": ints([3]),
             "hist_item_id": ints(history),
             "neg_hist_item_id": ints([h + 1 for h in history]),
             "label": tf.train.Feature(float_list=tf.train.FloatList(
                 value=[1.0]))}
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


@pytest.mark.parametrize("padding, width", [
    ("max_history", 20), ("longest", 7), ((4, 8, 16), 8), ((2, 4), 20),
    ((32,), 20)])
def test_parse_examples_pads_every_sequence_to_the_asked_width(padding, width):
  spec = FeatureSpec([CategoricalFeature("user_id", 9)],
                     [CategoricalFeature("item_id", 30)], max_history=20)
  serialized = tf.constant([_example([5, 6, 7]), _example(list(range(2, 9))),
                            _example([])])
  features = spec.parse_examples(serialized, with_negatives=True,
                                 padding=padding)
  np.testing.assert_array_equal(features[HISTORY_LENGTH], [3, 7, 0])
  expected = np.zeros([3, width], np.int64)
  expected[0, :3], expected[1, :7] = [5, 6, 7], range(2, 9)
  np.testing.assert_array_equal(features["hist_item_id"], expected)
  np.testing.assert_array_equal(features["neg_hist_item_id"],
                                np.where(expected > 0, expected + 1, 0))
  # Traced: max_history keeps the static [B, max_history] shape serving gets.
  traced = tf.function(lambda s: spec.parse_examples(s, padding=padding))
  shape = traced.get_concrete_function(
      tf.TensorSpec([None], tf.string)).structured_outputs["hist_item_id"].shape
  assert shape.as_list() == [None, 20 if width == 20 and padding in (
      "max_history", (32,)) else None]
  ragged = spec.parse_examples(serialized, padding=None)["hist_item_id"]
  assert ragged.to_list() == [[5, 6, 7], list(range(2, 9)), []]


def test_bad_paddings_are_refused_naming_the_argument():
  spec = FeatureSpec([], [CategoricalFeature("item_id", 30)], max_history=20)
  with pytest.raises(ValueError, match="padding must be one of"):
    spec.parse_examples(tf.constant([_example([5])]), padding="bucket")
  with pytest.raises(ValueError, match="bucket boundaries must be integers"):
    spec.parse_examples(tf.constant([_example([5])]), padding=(0, 8))
