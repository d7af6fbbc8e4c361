"""Every layer gives the same result for NumPy arrays, Python lists and tensors
in every tensor argument."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din import layers
from tfrs_din.layers.arrays import to_tensors
from tfrs_din.regularizers import MiniBatchAwareL2

rng = np.random.default_rng(1)
B, T, D = 2, 5, 3
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
X = rng.normal(size=(B, D))            # float64, as NumPy makes it
SEQ = rng.normal(size=(B, T, D))
ATTENTION = rng.uniform(size=(B, T))

# name -> (layer factory, positional args, keyword args); every array is
# passed as a tensor, a NumPy array and a Python list.
CASES = {
    "Dice": (layers.Dice, [X], {"training": False}),
    "PReLU": (layers.PReLU, [X], {}),
    "MLP": (lambda: layers.MLP((4,), output_units=2), [SEQ],
            {"mask": MASK, "training": False}),
    "LocalActivationUnit": (lambda: layers.LocalActivationUnit((4,)),
                            [X, SEQ], {"mask": MASK, "return_weights": True}),
    "AttentionGRUCell": (lambda: layers.AttentionGRUCell(4),
                         [X, [np.ones((B, 4))]], {}),
    "AGRUCell": (lambda: layers.AGRUCell(4), [np.c_[X, X[:, :1]],
                                             [np.ones((B, 4))]], {}),
    "AUGRUCell": (lambda: layers.AUGRUCell(4), [np.c_[X, X[:, :1]],
                                               [np.ones((B, 4))]], {}),
    "InterestEvolution": (lambda: layers.InterestEvolution(4, "AUGRU"),
                          [SEQ, ATTENTION, MASK], {"return_sequences": True}),
    "InterestEvolutionPerCandidate": (
        lambda: layers.InterestEvolution(4, "AGRU"),
        [SEQ, rng.uniform(size=(B, 2, T)), MASK], {}),
    "InterestEvolutionAIGRU": (lambda: layers.InterestEvolution(4, "AIGRU"),
                               [SEQ, ATTENTION, MASK], {}),
    "InterestExtractor": (lambda: layers.InterestExtractor(4), [SEQ],
                          {"mask": MASK}),
}


def _as(kind, value):
  if isinstance(value, np.ndarray):
    return {"tensor": lambda v: tf.constant(v, tf.float32 if v.dtype.kind == "f"
                                            else None),
            "numpy": lambda v: v, "list": lambda v: v.tolist()}[kind](value)
  if isinstance(value, list):
    return [_as(kind, v) for v in value]
  return value


def test_every_public_layer_has_a_case():
  assert set(layers.__all__) <= {n for n in CASES}


@pytest.mark.parametrize("kind", ["numpy", "list"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_arrays_and_lists_give_the_tensor_result(name, kind):
  make, args, kwargs = CASES[name]
  layer = make()
  expected = layer(*_as("tensor", args),
                   **{k: _as("tensor", v) for k, v in kwargs.items()})
  got = layer(*_as(kind, args), **{k: _as(kind, v) for k, v in kwargs.items()})
  tf.nest.map_structure(
      lambda e, g: np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6),
      expected, got)
  assert tf.nest.flatten(got)[0].dtype == tf.float32


def test_interest_extractor_auxiliary_loss_accepts_arrays():
  extractor = layers.InterestExtractor(4, aux_hidden_units=(3,))
  states = extractor(SEQ, MASK).numpy()
  negatives = rng.normal(size=SEQ.shape)
  expected = extractor.auxiliary_loss(
      tf.constant(states), tf.constant(SEQ, tf.float32),
      tf.constant(negatives, tf.float32), tf.constant(MASK))
  got = extractor.auxiliary_loss(states.tolist(), SEQ, negatives.tolist(),
                                 MASK.tolist())
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert float(got) > 0


def test_mini_batch_aware_l2_accepts_arrays():
  mba = MiniBatchAwareL2(frequencies=[1, 2, 2, 4, 1], l2=0.1)
  table = tf.Variable(tf.ones([5, 2]))
  assert float(mba(table, np.array([[1, 1], [3, 0]]))) == pytest.approx(0.175)
  assert float(mba(table, [[1, 1], [3, 0]])) == pytest.approx(0.175)


def test_to_tensors_keeps_tensors_bools_and_structure():
  tensor = tf.ones([2])
  converted = to_tensors({"a": [tensor, np.zeros(2)], "b": True, "c": None,
                          "d": [[1, 2]]}, tf.float32)
  assert converted["a"][0] is tensor
  assert converted["a"][1].dtype == tf.float32
  assert converted["b"] is True and converted["c"] is None
  assert converted["d"].dtype == tf.int32
  assert converted["d"].shape == (1, 2)
