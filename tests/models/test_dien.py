"""DIEN's attention (the official code's MLP, the paper's bilinear form) and
the normalisation of its auxiliary loss."""

import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from tfrs_din.features import HISTORY_LENGTH
from tfrs_din.models import DIENModel, DINModel

SMALL = dict(mlp_units=(8, 4), activation="prelu", gru_units=6,
             aux_hidden_units=(8, 4))


def _numpy_mlp_attention(model, candidate, states, length):
  """din_fcn_attention by hand: q = PReLU(V e + c), a 80-40-1 sigmoid net on
  [q, h, q - h, q * h], softmax over the valid steps."""
  dense, prelu = model.attention_query.layers
  kernel, bias = (w.numpy() for w in dense.weights)
  q = candidate @ kernel + bias
  q = np.maximum(q, 0) + prelu.alpha.numpy() * np.minimum(q, 0)
  unit = model.attention_unit
  h = states[:length]
  q = np.repeat(q[None], length, 0)
  hidden = np.concatenate([q, h, q - h, q * h], -1)
  hidden = ref.sigmoid(hidden @ unit.first_kernel.numpy()
                       + unit.first_bias.numpy())
  for layer in unit._rest._dense:
    w, b = (v.numpy() for v in layer.weights)
    hidden = ref.sigmoid(hidden @ w + b)
  w, b = (v.numpy() for v in unit._rest._output.weights)
  scores = (hidden @ w + b)[:, 0]
  weights = np.exp(scores - scores.max())
  return weights / weights.sum()


def _attention_inputs(model, features):
  """The model's attention weights [B, T] and what they are computed from:
  the embedded features, the interest states [B, T, H], the lengths [B]."""
  weights = model.attention_weights(features).numpy()
  embedded = model.embedder(features)
  states = model.extractor(embedded.history, embedded.mask).numpy()
  lengths = features[HISTORY_LENGTH].numpy()
  assert (lengths > 1).sum() >= 3
  return weights, embedded, states, lengths


def test_mlp_attention_matches_the_official_formula(small_data):
  model = DIENModel(small_data.spec, attention_units=(5, 3), **SMALL)
  assert model.attention_type == "mlp"  # the default
  features = small_data.features(slice(0, 6))
  weights, embedded, states, lengths = _attention_inputs(model, features)
  for row, length in enumerate(lengths):
    expected = _numpy_mlp_attention(
        model, embedded.candidate[row, 0].numpy(), states[row], length)
    np.testing.assert_allclose(weights[row, :length], expected, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_array_equal(weights[row, length:], 0.0)
  # The attention nets are trained: they receive gradients from the loss.
  with tf.GradientTape() as tape:
    loss = model.compute_loss(features, training=True)
  nets = (model.attention_unit.trainable_variables
          + model.attention_query.trainable_variables)
  gradients = tape.gradient(loss, nets)
  assert len(nets) >= 8 and all(g is not None for g in gradients)
  assert not hasattr(model, "attention_kernel")


def test_attention_type_is_validated(small_data):
  with pytest.raises(ValueError, match="attention_type must be one of"):
    DIENModel(small_data.spec, attention_type="dot", **SMALL)


def test_aux_reduction_reaches_the_extractor(small_data):
  # The default, "padded_mean", against "step_mean" on the same weights.
  reduction = "padded_mean"
  assert DIENModel(small_data.spec, **SMALL).aux_reduction == reduction
  features = small_data.features(slice(0, 16))
  models = {r: DIENModel(small_data.spec, aux_reduction=r, seed=0, **SMALL)
            for r in ("step_mean", reduction)}
  base = models["step_mean"]
  for model in models.values():
    model.build_all()     # the auxiliary net too
  models[reduction].set_weights(base.get_weights())
  terms = {r: float(m.loss_terms(features, training=True)["aux_loss"])
           for r, m in models.items()}
  mask = np.arange(small_data.spec.max_history)[None, :] < features[
      HISTORY_LENGTH].numpy()[:, None]
  steps = np.logical_and(mask[:, :-1], mask[:, 1:]).sum()
  # padded_mean: over every position of a batch padded to max_history.
  count = mask.shape[0] * (small_data.spec.max_history - 1)
  # Training-mode aux BN: the same batch gives the same per-step losses.
  assert terms[reduction] == pytest.approx(
      terms["step_mean"] * steps / count, rel=1e-5)
  assert models[reduction].get_config()["aux_reduction"] == reduction


def test_bilinear_attention_is_the_papers_softmax_of_h_w_e(small_data):
  # eq. 7: a_t = softmax_t(h_t W e_A) over the valid steps.
  model = DIENModel(small_data.spec, attention_type="bilinear", **SMALL)
  kernel = model.attention_kernel.numpy()
  item_dim = sum(f.embedding_dim for f in small_data.spec.item_features)
  assert kernel.shape == (SMALL["gru_units"], item_dim)
  assert not hasattr(model, "attention_unit")
  features = small_data.features(slice(0, 6))
  weights, embedded, states, lengths = _attention_inputs(model, features)
  for row, length in enumerate(lengths):
    scores = states[row, :length] @ kernel @ embedded.candidate[row, 0].numpy()
    expected = np.exp(scores - scores.max())
    np.testing.assert_allclose(weights[row, :length],
                               expected / expected.sum(), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_array_equal(weights[row, length:], 0.0)
  clone = DIENModel.from_config(model.get_config())
  assert clone.attention_type == "bilinear"
  assert "attention_initializer" not in model.get_config()


@pytest.mark.parametrize("pooling", ["states", "behaviours"])
def test_attention_pooling_feeds_the_tower_the_attended_sum(small_data,
                                                            pooling):
  # interest = [h'_T ; sum_t a_t x_t], x_t the states h_t or behaviours e_t.
  model = DIENModel(small_data.spec, attention_units=(5, 3),
                    attention_pooling_in_tower=pooling, **SMALL)
  features = small_data.features(slice(0, 6))
  weights, embedded, states, lengths = _attention_inputs(model, features)
  interest, _ = model.interest(model.embedder(features))
  interest = interest.numpy()[:, 0]                              # [B, X]
  reference = DIENModel(small_data.spec, attention_units=(5, 3), **SMALL)
  final_width = SMALL["gru_units"]
  keys = states if pooling == "states" else embedded.history.numpy()
  for row, length in enumerate(lengths):
    expected = weights[row, :length] @ keys[row, :length]
    np.testing.assert_allclose(interest[row, final_width:], expected,
                               rtol=1e-5, atol=1e-6)
  assert interest.shape[-1] == final_width + keys.shape[-1]
  assert reference.attention_pooling_in_tower == "behaviours"  # the default
  clone = DIENModel.from_config(model.get_config())
  assert clone.attention_pooling_in_tower == pooling
  with pytest.raises(ValueError, match="attention_pooling_in_tower must be"):
    DIENModel(small_data.spec, attention_pooling_in_tower="sum", **SMALL)


def test_din_pooling_feeds_the_tower_dins_interest(small_data):
  # interest = [h'_T ; sum_t w(e_t, e_A) e_t], w DIN's activation unit: a
  # DINModel given the same unit's weights computes the same sum.
  model = DIENModel(small_data.spec, attention_units=(5, 3),
                    attention_pooling_in_tower="din", **SMALL)
  din = DINModel(small_data.spec, attention_units=(5, 3),
                 mlp_units=SMALL["mlp_units"], activation="prelu")
  features = small_data.features(slice(0, 6))
  interest, _ = model.interest(model.embedder(features))
  din(features)
  din.embedder.set_weights(model.embedder.get_weights())
  din.attention.set_weights(model.behaviour_attention.get_weights())
  expected, weights = din.interest(din.embedder(features))
  final_width = SMALL["gru_units"]
  np.testing.assert_allclose(interest.numpy()[..., final_width:],
                             expected.numpy(), rtol=1e-5, atol=1e-6)
  # Not normalised (DIN's weights keep the intensity of the match), and
  # zero past each history's end.
  lengths = features[HISTORY_LENGTH].numpy()
  weights = weights["attention"].numpy()[:, 0]
  assert not np.allclose(weights.sum(-1), 1.0)
  for row, length in enumerate(lengths):
    np.testing.assert_array_equal(weights[row, length:], 0.0)
  # The DIN unit is trained through the click loss.
  with tf.GradientTape() as tape:
    logits = model(features, training=True)
  grads = tape.gradient(logits, model.behaviour_attention.trainable_variables)
  assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)
  clone = DIENModel.from_config(model.get_config())
  assert clone.attention_pooling_in_tower == "din"
