"""Models give the same predictions for features as tensors, NumPy arrays or
Python lists, through `__call__` and the methods that take features."""

import numpy as np
import pytest

from tfrs_din.models import BaseModel, DIENModel, DINModel

MODELS = {"base": lambda spec: BaseModel(spec, mlp_units=(4,)),
          "din": lambda spec: DINModel(spec, mlp_units=(4,),
                                       attention_units=(4,)),
          "dien": lambda spec: DIENModel(spec, mlp_units=(4,), gru_units=4,
                                         aux_hidden_units=(3,))}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_numpy_and_list_features_give_the_tensor_predictions(small_data, name):
  model = MODELS[name](small_data.spec)
  tensors = small_data.features(slice(0, 6))
  arrays = {k: v[:6] for k, v in small_data.arrays.items() if k != "is_test"}
  lists = {k: v.tolist() for k, v in arrays.items()}
  expected = model(tensors, training=False).numpy()
  assert expected.shape == (6,)
  for features in (arrays, lists):
    np.testing.assert_allclose(model(features, training=False), expected,
                               rtol=1e-6)
  if name != "base":
    np.testing.assert_allclose(model.attention_weights(lists),
                               model.attention_weights(tensors), rtol=1e-6)
    candidates = {f.name: np.stack([arrays[f.name]] * 2, 1)
                  for f in small_data.spec.item_features}
    np.testing.assert_allclose(model.score_candidates(lists, candidates),
                               np.stack([expected] * 2, 1), rtol=1e-5)
