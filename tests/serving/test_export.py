"""The export loads in a fresh process with no project code and answers every
signature like the in-memory model, for TF Serving-shaped requests."""

import json
import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from fresh_process import run_requests
from tfrs_din.data.synthetic import SyntheticConfig, generate
from tfrs_din.models import DIENModel, DINModel, BaseModel
from tfrs_din.serving.export import (CANDIDATE_PREFIX, export_saved_model,
                                     rest_instances_to_tensors)

# Runs in a fresh interpreter: TensorFlow and the serving protos only.
CLIENT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    export, requests_path, out_path = sys.argv[1:]
    assert "tfrs_din" not in sys.modules
    loaded = tf.saved_model.load(export)
    out = {"signatures": sorted(loaded.signatures),
           "variables": sorted(v.name for v in loaded.model_variables)}

    def as_tensors(signature, columns):
        specs = loaded.signatures[signature].structured_input_signature[1]
        return {k: tf.constant(np.asarray(columns[k],
                               dtype=specs[k].dtype.as_numpy_dtype))
                for k in specs}

    for key, req in json.load(open(requests_path)).items():
        sig = req["signature_name"]
        if "instances" in req:   # REST row format: stack each named field
            cols = {k: [row[k] for row in req["instances"]]
                    for k in req["instances"][0]}
        else:                    # REST columnar "inputs" format
            cols = req["inputs"]
        if sig == "predict_examples":
            cols = {"examples": [bytes.fromhex(x) for x in cols["examples"]]}
        result = loaded.signatures[sig](**as_tensors(sig, cols))
        out[key] = {k: v.numpy().tolist() for k, v in result.items()}
    warm = os.path.join(export, "assets.extra", "tf_serving_warmup_requests")
    out["warmup"] = []
    for record in tf.data.TFRecordDataset(warm):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        req = log.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
        sig = req.model_spec.signature_name
        result = loaded.signatures[sig](**as_tensors(sig, inputs))
        out["warmup"].append([sig, {k: list(v.shape) for k, v in result.items()}])
    json.dump(out, open(out_path, "w"))
''').replace("import json, sys", "import json, os, sys")


@pytest.fixture(scope="module")
def data():
  return generate(SyntheticConfig(num_users=80, max_history=10, seed=5))


def _example_bytes(arrays, i, spec):
  feats = {}
  for f in spec.user_features + spec.item_features:
    feats[f.name] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=[int(arrays[f.name][i])]))
  n = int(arrays["hist_length"][i])
  for name in spec.history_names():
    feats[name] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=arrays[name][i][:n].tolist()))
  return tf.train.Example(features=tf.train.Features(feature=feats)
                          ).SerializeToString()


@pytest.mark.parametrize("cls", [BaseModel, DINModel, DIENModel])
def test_export_serves_every_signature_like_the_model(cls, data, tmp_path):
  tf.keras.utils.set_random_seed(0)
  model = cls(data.spec, mlp_units=(8, 4))
  model.compile(tf.keras.optimizers.Adam(0.01))
  model.fit(data.dataset("train", 32).take(3), verbose=0)
  path = export_saved_model(model, str(tmp_path / "export"), version=7)
  assert path.endswith(os.path.join("export", "7"))
  # Training ran DIEN's fused C++ kernels; the export must not need them.
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    assert b"TfrsDin" not in f.read()

  rows = list(range(6))
  features = data.features(rows)
  serving_keys = list(data.spec.serving_signature())
  assert not any(k.startswith("neg_") for k in serving_keys)
  expected_default = model(features, training=False).numpy()
  instances = [{k: data.arrays[k][i].tolist() for k in serving_keys}
               for i in rows]
  columns = {k: data.arrays[k][rows].tolist() for k in serving_keys}
  examples = [_example_bytes(data.arrays, i, data.spec) for i in rows]

  # One user, 5 candidates, in the REST row format.
  cand = {"item_id": [3, 9, 4, 20, 11], "category_id": [2, 5, 7, 2, 3]}
  user_row = {k: data.arrays[k][0].tolist() for k in serving_keys
              if k not in ("item_id", "category_id")}
  user_row.update({CANDIDATE_PREFIX + k: v for k, v in cand.items()})
  tiled = {k: tf.repeat(v[:1], 5, axis=0) for k, v in features.items()}
  tiled.update({k: tf.constant(v, tf.int64) for k, v in cand.items()})
  expected_candidates = model(tiled, training=False).numpy()

  requests = {
      "rows": {"signature_name": "serving_default", "instances": instances},
      "columns": {"signature_name": "serving_default", "inputs": columns},
      "examples": {"signature_name": "predict_examples",
                   "inputs": {"examples": [e.hex() for e in examples]}},
      "candidates": {"signature_name": "score_candidates",
                     "instances": [user_row]},
  }
  out = run_requests(CLIENT, path, requests, tmp_path)

  # Index-only export: serving_default and score_candidates are the
  # index-based predict_indices and score_candidates_indices.
  assert out["signatures"] == ["predict_examples", "predict_indices",
                               "score_candidates", "score_candidates_indices",
                               "serving_default"]
  np.testing.assert_allclose(out["rows"]["probability"], expected_default,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["columns"]["probability"], expected_default,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["examples"]["probability"], expected_default,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["candidates"]["probabilities"],
                             [expected_candidates], rtol=1e-5, atol=1e-6)
  assert sorted(s for s, _ in out["warmup"]) == sorted(out["signatures"])
  # No training-only state: DIEN's auxiliary net and MBA frequencies stay out.
  assert not any("aux" in v or "frequency" in v for v in out["variables"])


def test_rest_instances_helper_stacks_rows(data):
  sig = data.spec.serving_signature()
  rows = [{k: data.arrays[k][i].tolist() for k in sig} for i in range(3)]
  tensors = rest_instances_to_tensors(rows, sig)
  assert tensors["hist_item_id"].shape == (3, data.spec.max_history)
  assert tensors["user_id"].dtype == np.int64
