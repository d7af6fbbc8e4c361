"""SavedModel export for TF Serving.

The export is a plain `tf.Module` holding the model's variables and three
signatures, so it loads with `tf.saved_model.load` or `tensorflow_model_server`
without any project code:

  serving_default   padded dense features (+ `hist_length`) -> probability [B]
  predict_examples  serialized `tf.train.Example` (as `beam_jobs` writes) ->
                    probability [B]
  score_candidates  one row per user with `candidate_<item feature>` [B, N] ->
                    probabilities [B, N]; user-side work runs once per user

and `assets.extra/tf_serving_warmup_requests` with one request per signature.
DIEN's export takes no negative samples and runs no training-only op.
"""

from __future__ import annotations

import os
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from tfrs_din.features import FeatureSpec
from tfrs_din.models.ctr_model import CTRModel

CANDIDATE_PREFIX = "candidate_"
SIGNATURES = ("serving_default", "predict_examples", "score_candidates")


def candidate_signature(spec: FeatureSpec) -> Dict[str, tf.TensorSpec]:
  """Inputs of `score_candidates`: user features, behaviours, [B, N] candidates."""
  item_names = {f.name for f in spec.item_features}
  sig = {k: v for k, v in spec.serving_signature().items()
         if k not in item_names}
  for f in spec.item_features:
    name = CANDIDATE_PREFIX + f.name
    sig[name] = tf.TensorSpec([None, None], tf.int64, name)
  return sig


class ServingModule(tf.Module):
  """Signatures over a trained `CTRModel` (inference mode throughout).

  The model is captured by closures, not stored as an attribute: only its
  variables are tracked, so the export needs no Keras or project code to load.
  """

  def __init__(self, model: CTRModel):
    super().__init__(name="tfrs_din_serving")
    spec = model.spec

    def predict(features):
      return {"probability": model(features, training=False)}

    def predict_examples(examples):
      features = spec.parse_examples(examples, with_negatives=False,
                                     with_label=False)
      return {"probability": model(features, training=False)}

    def score_candidates(features):
      candidates = {f.name: features[CANDIDATE_PREFIX + f.name]
                    for f in spec.item_features}
      return {"probabilities": model.score_candidates(features, candidates)}

    self.serving_default = tf.function(
        predict, input_signature=[spec.serving_signature()])
    self.predict_examples = tf.function(
        predict_examples,
        input_signature=[tf.TensorSpec([None], tf.string, "examples")])
    self.score_candidates = tf.function(
        score_candidates, input_signature=[candidate_signature(spec)])
    # Only what serving reads: not DIEN's auxiliary net nor MBA's frequencies.
    used = {}
    for name in SIGNATURES:
      for variable in getattr(self, name).get_concrete_function().variables:
        used[id(variable)] = variable
    self.model_variables = list(used.values())


def _warmup_requests(spec: FeatureSpec, model_name: str):
  """One PredictRequest per signature, built from a dummy batch."""
  from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # pylint: disable=g-import-not-at-top
  dummy = spec.dummy_features(batch_size=2, with_negatives=False)
  dummy.pop(spec.label)
  candidates = dict(dummy)
  for f in spec.item_features:
    candidates[CANDIDATE_PREFIX + f.name] = tf.fill(
        [2, 3], tf.constant(1, tf.int64))
    candidates.pop(f.name)
  example = tf.train.Example(features=tf.train.Features(feature={
      **{f.name: tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
         for f in spec.user_features + spec.item_features},
      **{n: tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
         for n in spec.history_names()}})).SerializeToString()
  inputs_by_signature = {
      "serving_default": dummy, "score_candidates": candidates,
      "predict_examples": {"examples": tf.constant([example])}}
  for signature, inputs in inputs_by_signature.items():
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name,
                                       signature_name=signature))
    for key, value in inputs.items():
      request.inputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    yield prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))


def export_saved_model(model: CTRModel, export_base: str,
                       version: Optional[int] = None,
                       model_name: str = "tfrs_din") -> str:
  """Writes `export_base/<version>/` (TF Serving's layout) and returns it.

  Args:
    model: a trained model.
    export_base: the model's base path for TF Serving.
    version: version number; the current Unix time by default.
    model_name: model name used in the warm-up requests.
  """
  version = int(time.time()) if version is None else int(version)
  path = os.path.join(export_base, str(version))
  if tf.io.gfile.exists(path):
    raise FileExistsError(f"export version {path!r} already exists")
  module = ServingModule(model)
  tf.saved_model.save(module, path, signatures={
      name: getattr(module, name).get_concrete_function()
      for name in SIGNATURES})
  assets = os.path.join(path, "assets.extra")
  tf.io.gfile.makedirs(assets)
  with tf.io.TFRecordWriter(
      os.path.join(assets, "tf_serving_warmup_requests")) as writer:
    for log in _warmup_requests(model.spec, model_name):
      writer.write(log.SerializeToString())
  return path


def rest_instances_to_tensors(instances, signature_inputs) -> Dict[str, np.ndarray]:
  """Stacks TF Serving REST "instances" (row format) into named arrays."""
  return {name: np.asarray([row[name] for row in instances],
                           dtype=spec.dtype.as_numpy_dtype)
          for name, spec in signature_inputs.items()}
