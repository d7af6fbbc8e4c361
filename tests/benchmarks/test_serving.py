"""The serving benchmark's FLOP floor against hand counts."""

import os
import sys

import pytest

from tfrs_din.features import CategoricalFeature, FeatureSpec
from tfrs_din.models import DIENModel, DINModel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "benchmarks"))
import serving  # noqa: E402  pylint: disable=g-import-not-at-top

SPEC = FeatureSpec([CategoricalFeature("user_id", 10, 4)],
                   [CategoricalFeature("item_id", 20, 4),
                    CategoricalFeature("category_id", 6, 4)], max_history=8)
N, L = 3, 4   # candidates, behaviours


def _built(model):
  model.build_all()
  return model


def test_din_floor_is_the_hand_count():
  # D = 8; tower input [u ; e_A ; interest ; s ; e_A * s] = 36 wide.
  model = _built(DINModel(SPEC, mlp_units=(8, 4), attention_units=(6, 3)))
  parts = serving.floor_multiply_adds(model, N, L)
  assert parts["tower"] == N * (36 * 8 + 8 * 4 + 4 * 1)
  assert parts["pairs"] == N * L * (8 * 6 + 6 * 3 + 3 * 1)
  assert parts["behaviours"] == L * 8 * 6
  assert parts["candidates"] == N * 8 * 6
  assert parts["total"] == sum(v for k, v in parts.items() if k != "total")


@pytest.mark.parametrize("attention_type", ["mlp", "bilinear"])
def test_dien_floor_counts_its_attention(attention_type):
  # G = 5; tower input [u ; e_A ; h'_T ; sum_t a_t e_t ; s ; e_A * s] =
  # 4 + 8 + 5 + 8 + 16 = 41.
  model = _built(DIENModel(SPEC, mlp_units=(8, 4), gru_units=5,
                           aux_hidden_units=(6, 3), attention_units=(6, 3),
                           attention_type=attention_type))
  parts = serving.floor_multiply_adds(model, N, L)
  assert parts["tower"] == N * (41 * 8 + 8 * 4 + 4 * 1)
  assert parts["extractor"] == L * (8 * 15 + 5 * 15)
  assert parts["evolution_projection"] == L * 5 * 15
  assert parts["evolution"] == N * L * 5 * 15
  if attention_type == "mlp":
    # query D*G; the net's q-only part per candidate, h-only part per step,
    # q*h part and the 6-3-1 layers per pair.
    expected = (N * (8 * 5 + 5 * 6) + L * 5 * 6
                + N * L * (5 * 6 + 6 * 3 + 3 * 1))
  else:
    expected = N * (8 * 5 + L * 5)   # query e_A W^T, then a logit per step
  assert parts["attention"] == expected


def test_dien_floor_with_din_pooling_adds_dins_activation_unit():
  plain = serving.floor_multiply_adds(_built(DIENModel(
      SPEC, mlp_units=(8, 4), gru_units=5, attention_units=(6, 3))), N, L)
  parts = serving.floor_multiply_adds(_built(DIENModel(
      SPEC, mlp_units=(8, 4), gru_units=5, attention_units=(6, 3),
      attention_pooling_in_tower="din")), N, L)
  assert parts["tower"] == plain["tower"]      # both pool 8-wide behaviours
  assert parts["pairs"] == N * L * (8 * 6 + 6 * 3 + 3 * 1)
  assert parts["behaviours"] == L * 8 * 6
  assert parts["candidates"] == N * 8 * 6
  assert parts["total"] == plain["total"] + (
      parts["pairs"] + parts["behaviours"] + parts["candidates"])
