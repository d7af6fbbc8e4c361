"""The FLOP count of benchmarks/floor.py against hand counts, and its
products against the models' own kernels."""

import os
import sys

import numpy as np
import pytest

from tfrs_din.features import CategoricalFeature, FeatureSpec
from tfrs_din.models import DIENModel, DINModel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "benchmarks"))
import floor  # noqa: E402  pylint: disable=g-import-not-at-top

LENGTHS = np.array([0, 1, 3, 6])   # mean 2.5; mean max(n - 1, 0) 1.75
SPEC = FeatureSpec([CategoricalFeature("user_id", 10, 4)],
                   [CategoricalFeature("item_id", 20, 4),
                    CategoricalFeature("category_id", 6, 4)], max_history=8)


def _built(model):
  model.build_all()
  return model


def _din():
  return _built(DINModel(SPEC, mlp_units=(8, 4), attention_units=(6, 3)))


def _dien():
  return _built(DIENModel(SPEC, mlp_units=(8, 4), gru_units=5,
                          aux_hidden_units=(6, 3), attention_units=(6, 3)))


def test_din_flops_are_the_hand_count():
  # D = 8 (two item features of 4), user 4; the tower's input [u ; e_A ;
  # interest ; s ; e_A * s] is 4 + 8 + 8 + 16 = 36 wide.
  per_example = (36 * 8 + 8 * 4 + 4 * 1) + 8 * 6       # tower, query part
  per_behaviour = 8 * 6 + 8 * 6 + 6 * 3 + 3 * 1         # key, q*k, 6-3-1
  forward = 2 * (per_example + 2.5 * per_behaviour)
  products = floor.matmuls(_din())
  assert floor.flops_per_example(products, LENGTHS, False)["total"] == (
      pytest.approx(forward))
  assert floor.flops_per_example(products, LENGTHS, True)["total"] == (
      pytest.approx(3 * forward))


def test_dien_flops_are_the_hand_count():
  # G = 5; tower input [u ; e_A ; h'_T ; sum_t a_t e_t ; s ; e_A * s] =
  # 4 + 8 + 5 + 8 + 16 = 41; "mlp" attention on the states.
  per_example = (41 * 8 + 8 * 4 + 4) + 8 * 5 + 5 * 6
  per_behaviour = (8 * 15 + 5 * 15          # extractor: input, recurrent
                   + 5 * 15 + 5 * 15        # evolution: input, recurrent
                   + 5 * 6 + 5 * 6 + 6 * 3 + 3)   # attention unit
  per_aux_pair = (5 + 8) * 6 + 6 * 3 + 3
  forward = 2 * (per_example + 2.5 * per_behaviour)
  aux = 2 * 2 * 1.75 * per_aux_pair
  products = floor.matmuls(_dien())
  assert floor.flops_per_example(products, LENGTHS, False)["total"] == (
      pytest.approx(forward))
  assert floor.flops_per_example(products, LENGTHS, True)["total"] == (
      pytest.approx(3 * (forward + aux)))


def test_dien_with_din_pooling_adds_dins_activation_unit():
  # The tower's sum_t a_t e_t (8 wide) becomes DIN's pooled behaviours (8
  # wide): the tower is unchanged; DIN's unit adds its query part per
  # example and key, q*k and 6-3-1 layers per behaviour.
  plain = floor.matmuls(_dien())
  pooled = floor.matmuls(_built(DIENModel(
      SPEC, mlp_units=(8, 4), gru_units=5, aux_hidden_units=(6, 3),
      attention_units=(6, 3), attention_pooling_in_tower="din")))
  extra = 2 * (8 * 6 + 2.5 * (8 * 6 + 8 * 6 + 6 * 3 + 3 * 1))
  for training in (False, True):
    added = (floor.flops_per_example(pooled, LENGTHS, training)["total"]
             - floor.flops_per_example(plain, LENGTHS, training)["total"])
    assert added == pytest.approx(extra * (3 if training else 1))


def _dien_din_pooling():
  return _built(DIENModel(SPEC, mlp_units=(8, 4), gru_units=5,
                          aux_hidden_units=(6, 3), attention_units=(6, 3),
                          attention_pooling_in_tower="din"))


@pytest.mark.parametrize("make", [_din, _dien, _dien_din_pooling],
                         ids=["din", "dien", "dien_din_pooling"])
def test_every_counted_product_is_one_of_the_models_kernels(make):
  model = make()
  shapes = set()
  for weight in model.weights:
    if weight.shape.rank == 2:
      k, n = weight.shape
      shapes |= {(k, n), (k // 4, n)}     # the activation units' split form
  for product in floor.matmuls(model):
    assert (product.k, product.n) in shapes, product


def test_floor_at_one_rate_is_the_rate_over_the_flops():
  products = floor.matmuls(_din())
  rates = {floor._shape(m, LENGTHS, 64): 1e9 for m in products}  # pylint: disable=protected-access
  total = floor.flops_per_example(products, LENGTHS, True)["total"]
  assert floor.floor_examples_per_s(products, LENGTHS, rates, 64, True) == (
      pytest.approx(1e9 / total))


def test_matmul_rate_is_a_plausible_flop_rate():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rate = floor.matmul_rate(tf, 64, 36, 80, seconds=0.05)
  assert 1e7 < rate < 1e14
