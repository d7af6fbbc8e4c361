"""SavedModel export for TF Serving.

The export is a plain `tf.Module` holding the model's variables (and, for a
raw-id export, its lookup tables), so it loads with `tf.saved_model.load` or
`tensorflow_model_server` without any project code.

Raw-id signatures (when `export_saved_model` gets the prepared `data_dir`):

  serving_default           user features [B], `hist_item_id` [B, H] and
                            `item_id` [B], raw ids -> `probability` [B]
  score_candidates          user features [B], `hist_item_id` [B, H] and
                            `candidate_item_id` [B, N], raw ids ->
                            `probabilities` [B, N]; user-side work once

Raw ids are strings exactly as `prepare` read them (or int64, see
`export_saved_model`); every other item feature is looked up in the graph
(`tfrs_din.serving.lookup`). Histories are oldest first, "" is padding and may
appear anywhere; only the most recent `max_history` ids are used.

Index-based signatures (always; inputs are vocabulary indices):

  predict_indices           padded dense features (+ `hist_length`) ->
                            `probability` [B]
  score_candidates_indices  one row per user with `candidate_<item feature>`
                            [B, N] -> `probabilities` [B, N]
  predict_examples          serialized `tf.train.Example` (as `beam_jobs`
                            writes) -> `probability` [B]

Both `score_candidates` forms compute the model's probabilities with
`tfrs_din.serving.inference.Scorer` (fewer, larger kernels; optionally
compiled with XLA: `export_saved_model(..., jit_compile=True)`, which TF
Serving runs with `--xla_cpu_compilation_enabled=true`) where it covers the
model, else with `model.score_candidates`.

Without `data_dir`, `serving_default` and `score_candidates` are the
index-based `predict_indices` and `score_candidates_indices` (as in earlier
exports). `assets.extra/tf_serving_warmup_requests` holds one request per
signature. DIEN's export takes no negative samples and runs no training-only
op.

Every signature checks its inputs before anything else reads them
(`validated_inputs`): each input's rank, then a common batch size, then
non-empty candidate lists and ids. A failed check answers INVALID_ARGUMENT
with "assertion failed: [<input>: expected ..., got ...]", the input's name
first, e.g. "user_id: expected one string per row (shape [batch]), got
rank 2 (shape [1 1])". (TF Serving returns that message as it is; a Python
`tf.saved_model.load` caller sees it after a "Graph execution error:"
preamble, which `tfrs_din.serving.client.run_signature` strips as the server
would.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfrs_din.features import (HISTORY_LENGTH, HISTORY_PREFIX, FeatureSpec)
from tfrs_din.models.ctr_model import CTRModel
from tfrs_din.serving.inference import CANDIDATE_PREFIX, Scorer, supports
from tfrs_din.serving.lookup import RawIdLookup, write_lookup_files

# The input of `predict_examples`: serialized `tf.train.Example`s [B].
_EXAMPLES = tf.TensorSpec([None], tf.string, "examples")
INDEX_SIGNATURES = ("predict_indices", "score_candidates_indices",
                    "predict_examples")
RAW_SIGNATURES = ("serving_default", "score_candidates")
# Kept for callers of earlier versions: the signatures every export has.
SIGNATURES = ("serving_default", "predict_examples", "score_candidates")


def candidate_signature(spec: FeatureSpec) -> Dict[str, tf.TensorSpec]:
  """Inputs of `score_candidates_indices`: user features, behaviours, [B, N]
  candidates (vocabulary indices)."""
  item_names = {f.name for f in spec.item_features}
  sig = {k: v for k, v in spec.serving_signature().items()
         if k not in item_names}
  for f in spec.item_features:
    name = CANDIDATE_PREFIX + f.name
    sig[name] = tf.TensorSpec([None, None], tf.int64, name)
  return sig


def raw_signature(spec: FeatureSpec, id_dtype: tf.DType = tf.string,
                  candidates: bool = False) -> Dict[str, tf.TensorSpec]:
  """Inputs of the raw-id signatures.

  Args:
    spec: the model's feature spec.
    id_dtype: dtype of the raw ids.
    candidates: `score_candidates` (`candidate_item_id` [B, N]) rather than
      `serving_default` (`item_id` [B]).
  """
  sig = {f.name: tf.TensorSpec([None], id_dtype, f.name)
         for f in spec.user_features}
  history = HISTORY_PREFIX + spec.item_id
  sig[history] = tf.TensorSpec([None, None], id_dtype, history)
  if candidates:
    name = CANDIDATE_PREFIX + spec.item_id
    sig[name] = tf.TensorSpec([None, None], id_dtype, name)
  else:
    sig[spec.item_id] = tf.TensorSpec([None], id_dtype, spec.item_id)
  for name in spec.numeric_features:
    sig[name] = tf.TensorSpec([None], tf.float32, name)
  return sig


_KINDS = {tf.string: "string", tf.int64: "int64", tf.float32: "float"}


def _expected(name: str, spec: tf.TensorSpec) -> str:
  """What input `name` of signature input `spec` must be, in words."""
  kind = _KINDS.get(spec.dtype, spec.dtype.name)
  if spec.shape.rank == 1:
    return f"one {kind} per row (shape [batch])"
  width = ("candidates" if name.startswith(CANDIDATE_PREFIX)
           else "history" if name.startswith(HISTORY_PREFIX) else "n")
  return f"a list of {kind}s per row (shape [batch, {width}])"


def _fail_unless(condition: tf.Tensor, message) -> tf.Operation:
  """An Assert whose error reads "assertion failed: [<message>]"; `message`
  is a string or a string tensor (`tf.strings.format`)."""
  return tf.debugging.Assert(condition, [message])


def _runtime_rank(value: tf.Tensor) -> tf.Tensor:
  """The rank of `value` as fed, which may differ from its static rank.

  `tf.rank`, and graph optimisers folding `Rank` or `Size(Shape(.))`, answer
  the signature's declared rank; the number of entries of a boolean mask of
  the runtime shape has no static value to fold.
  """
  shape = tf.shape(value)
  return tf.shape(tf.where(shape >= 0))[0]


def validated_inputs(inputs: Dict[str, tf.Tensor],
                     specs: Dict[str, tf.TensorSpec]) -> Dict[str, tf.Tensor]:
  """`inputs` read through checks of their structure, each failing with a
  message that starts with the input's name and says what was expected.

  TF Serving feeds a request's tensors as they come, of any shape: an input
  of the wrong rank would otherwise fail deep in the graph with a message
  that names no input. First every input's rank is checked, then that all
  share the first (batch) dimension; every later op reads the returned
  tensors, so it runs only after those checks passed.

  Args:
    inputs: the signature's inputs by name.
    specs: their `tf.TensorSpec`s (rank and dtype expected).
  """
  names = sorted(inputs)
  checks = []
  for name in names:
    value = inputs[name]
    rank = _runtime_rank(value)
    checks.append(_fail_unless(
        tf.equal(rank, specs[name].shape.rank), tf.strings.format(
            f"{name}: expected {_expected(name, specs[name])}, got rank "
            "{} (shape {})", (rank, tf.shape(value)))))
  with tf.control_dependencies(checks):
    inputs = {k: tf.identity(v) for k, v in inputs.items()}
  first = names[0]
  rows = tf.shape(inputs[first])[0]
  checks = []
  for name in names[1:]:
    got = tf.shape(inputs[name])[0]
    checks.append(_fail_unless(tf.equal(got, rows), tf.strings.format(
        f"{name}: expected {{}} rows (the batch size of {first}), got {{}}; "
        "every input must have the same batch size (first dimension)",
        (rows, got))))
  with tf.control_dependencies(checks):
    return {k: tf.identity(v) for k, v in inputs.items()}


def _after(check: tf.Operation, value: tf.Tensor) -> tf.Tensor:
  """`value`, read only once `check` has passed."""
  with tf.control_dependencies([check]):
    return tf.identity(value)


def _check_candidates(candidates: tf.Tensor, name: str) -> tf.Tensor:
  """`candidates` [B, N] once N > 0 is checked."""
  return _after(_fail_unless(tf.shape(candidates)[1] > 0, tf.strings.format(
      f"{name}: expected at least one candidate per row, got shape {{}}",
      tf.shape(candidates))), candidates)


def _check_ids(ids: tf.Tensor, name: str) -> tf.Tensor:
  """String `ids` once checked for empty ids (padding)."""
  return _after(_fail_unless(
      tf.logical_not(tf.reduce_any(ids == "")),
      f"{name}: expected non-empty ids, got an empty id (or a negative int64 "
      f"id): only {HISTORY_PREFIX}{{item feature}} may hold padding"), ids)


def _raw_user_features(lookup: RawIdLookup, spec: FeatureSpec,
                       inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """User features and behaviours as the model's index features (`inputs`
  already `validated_inputs`)."""
  features = {}
  for f in spec.user_features:
    ids = _check_ids(lookup.as_strings(inputs[f.name]), f.name)
    features[f.name] = lookup.feature_index(f.name, ids)
  history = lookup.as_strings(inputs[HISTORY_PREFIX + spec.item_id])
  # Drop padding wherever it is, then keep the most recent behaviours.
  kept = tf.ragged.boolean_mask(history, history != "")[:, -spec.max_history:]
  features[HISTORY_LENGTH] = kept.row_lengths()
  dense = kept.to_tensor(default_value="", shape=[None, spec.max_history])
  for name, value in lookup.item_indices(dense).items():
    features[HISTORY_PREFIX + name] = value
  for name in spec.numeric_features:
    features[name] = inputs[name]
  return features


class ServingModule(tf.Module):
  """Signatures over a trained `CTRModel` (inference mode throughout).

  The model is captured by closures, not stored as an attribute: only its
  variables are tracked, so the export needs no Keras or project code to load.

  Args:
    model: the trained model.
    lookup: raw-id lookups; None for an index-only export.
    fast_scoring: `score_candidates` (both forms) uses
      `tfrs_din.serving.inference.Scorer` where it covers the model (the same
      probabilities from fewer, larger kernels); False uses
      `model.score_candidates`.
    jit_compile: compile that scorer's numeric part with XLA (TF Serving then
      needs `--xla_cpu_compilation_enabled=true`).
  """

  def __init__(self, model: CTRModel, lookup: Optional[RawIdLookup] = None,
               fast_scoring: bool = True, jit_compile: bool = False):
    super().__init__(name="tfrs_din_serving")
    spec = model.spec
    if jit_compile and not (fast_scoring and supports(model)):
      raise ValueError(
          "jit_compile needs fast_scoring and a model the fast scorer covers "
          f"(tfrs_din.serving.inference.supports), not {type(model).__name__} "
          "with this configuration")
    scorer = (Scorer(model, jit_compile) if fast_scoring and supports(model)
              else model.score_candidates)

    def predict(features):
      features = validated_inputs(features, spec.serving_signature())
      return {"probability": model(features, training=False)}

    def predict_examples(examples):
      examples = validated_inputs(
          {"examples": examples}, {"examples": _EXAMPLES})["examples"]
      features = spec.parse_examples(examples, with_negatives=False,
                                     with_label=False)
      return {"probability": model(features, training=False)}

    def score_candidates(features):
      features = validated_inputs(features, candidate_signature(spec))
      candidates = {f.name: features[CANDIDATE_PREFIX + f.name]
                    for f in spec.item_features}
      candidates = {name: _check_candidates(value, CANDIDATE_PREFIX + name)
                    for name, value in candidates.items()}
      return {"probabilities": scorer(features, candidates)}

    self.predict_indices = tf.function(
        predict, input_signature=[spec.serving_signature()])
    self.predict_examples = tf.function(predict_examples,
                                        input_signature=[_EXAMPLES])
    self.score_candidates_indices = tf.function(
        score_candidates, input_signature=[candidate_signature(spec)])
    self.signature_functions = {
        "serving_default": self.predict_indices,
        "score_candidates": self.score_candidates_indices}

    if lookup is not None:
      self.lookup = lookup
      item_id = spec.item_id

      def predict_raw(inputs):
        inputs = validated_inputs(inputs, raw_signature(spec, lookup.id_dtype))
        features = _raw_user_features(lookup, spec, inputs)
        ids = _check_ids(lookup.as_strings(inputs[item_id]), item_id)
        features.update(lookup.item_indices(ids))
        return {"probability": model(features, training=False)}

      def score_candidates_raw(inputs):
        inputs = validated_inputs(inputs, raw_signature(
            spec, lookup.id_dtype, candidates=True))
        features = _raw_user_features(lookup, spec, inputs)
        name = CANDIDATE_PREFIX + item_id
        ids = _check_candidates(
            _check_ids(lookup.as_strings(inputs[name]), name), name)
        return {"probabilities": scorer(features, lookup.item_indices(ids))}

      self.predict_raw = tf.function(predict_raw, input_signature=[
          raw_signature(spec, lookup.id_dtype)])
      self.score_candidates_raw = tf.function(
          score_candidates_raw, input_signature=[
              raw_signature(spec, lookup.id_dtype, candidates=True)])
      self.signature_functions = {"serving_default": self.predict_raw,
                                  "score_candidates": self.score_candidates_raw}
    for name in INDEX_SIGNATURES:
      self.signature_functions[name] = getattr(self, name)
    # Only what serving reads: not DIEN's auxiliary net nor MBA's frequencies.
    used = {}
    for function in self.signature_functions.values():
      for variable in function.get_concrete_function().variables:
        used[id(variable)] = variable
    self.model_variables = list(used.values())

  def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    """Signature name -> concrete function, as `tf.saved_model.save` takes."""
    return {name: function.get_concrete_function()
            for name, function in self.signature_functions.items()}


def _example_inputs(spec: FeatureSpec, name: str, id_dtype: tf.DType
                    ) -> Dict[str, np.ndarray]:
  """A small valid request of signature `name` (two rows)."""
  if name in ("serving_default", "score_candidates") and id_dtype is not None:
    ids = (lambda shape: np.full(shape, b"0", object) if id_dtype == tf.string
           else np.zeros(shape, np.int64))
    history = ids([2, 3])
    history[:, -1] = b"" if id_dtype == tf.string else -1  # padding
    inputs = {f.name: ids([2]) for f in spec.user_features}
    inputs[HISTORY_PREFIX + spec.item_id] = history
    if name == "score_candidates":
      inputs[CANDIDATE_PREFIX + spec.item_id] = ids([2, 3])
    else:
      inputs[spec.item_id] = ids([2])
  elif name == "predict_examples":
    example = tf.train.Example(features=tf.train.Features(feature={
        n: tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
        for n in [f.name for f in spec.user_features + spec.item_features]
        + spec.history_names()}))
    return {"examples": np.asarray([example.SerializeToString()], object)}
  else:
    dummy = spec.dummy_features(batch_size=2, with_negatives=False)
    dummy.pop(spec.label)
    inputs = {k: v.numpy() for k, v in dummy.items()}
    if name in ("score_candidates", "score_candidates_indices"):
      for f in spec.item_features:
        inputs.pop(f.name)
        inputs[CANDIDATE_PREFIX + f.name] = np.ones([2, 3], np.int64)
    return inputs
  for n in spec.numeric_features:
    inputs[n] = np.zeros([2], np.float32)
  return inputs


def _warmup_requests(spec: FeatureSpec, model_name: str,
                     signature_names: List[str],
                     id_dtype: Optional[tf.DType]):
  """One PredictRequest per signature, built from a dummy batch."""
  from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # pylint: disable=g-import-not-at-top
  for signature in signature_names:
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name,
                                       signature_name=signature))
    for key, value in _example_inputs(spec, signature, id_dtype).items():
      request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    yield prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))


def trained_data_dir(model_dir: str) -> Optional[str]:
  """The prepared data directory a model was trained on, from
  `model_dir/train_config.json` (None if it is not recorded).

  Args:
    model_dir: a directory written by `tfrs_din.training.train`.
  """
  from tfrs_din.training.trainer import CONFIG_FILE  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as handle:
    return json.load(handle).get("data_dir")


def export_saved_model(model: CTRModel, export_base: str,
                       version: Optional[int] = None,
                       model_name: str = "tfrs_din",
                       data_dir: Optional[str] = None,
                       id_dtype: tf.DType = tf.string,
                       fast_scoring: bool = True,
                       jit_compile: bool = False) -> str:
  """Writes `export_base/<version>/` (TF Serving's layout) and returns it.

  With `data_dir`, `serving_default` and `score_candidates` take raw ids and
  the vocabularies and item table of `data_dir` travel as assets; without it,
  they take vocabulary indices. The index-based `predict_indices`,
  `score_candidates_indices` and `predict_examples` are always there.

  Args:
    model: a trained model.
    export_base: the model's base path for TF Serving.
    version: version number; the current Unix time by default.
    model_name: model name used in the warm-up requests.
    data_dir: the `beam_jobs.prepare` output the model was trained on (its
      `vocab/` and `item_table.tsv`); None for an index-only export.
    id_dtype: dtype of the raw ids, `tf.string` (padding "") or `tf.int64`
      (matched by decimal string, e.g. 42 -> "42"; negative ids are padding).
    fast_scoring: `score_candidates` and `score_candidates_indices` compute
      the model's probabilities with `tfrs_din.serving.inference.Scorer`
      (folded Dice, one matrix product for the activation unit's first layer,
      a split tower; docs/benchmarks.md, "serving floor") where it covers the
      model; False keeps `model.score_candidates`.
    jit_compile: also compile that computation with XLA (request shapes are
      padded to a few buckets, each compiled on first use). TF Serving must
      then run with `--xla_cpu_compilation_enabled=true`.

  Returns:
    The version directory.

  Raises:
    FileExistsError: the version already exists.
    FileNotFoundError, ValueError: `data_dir` lacks or mismatches the
      model's vocabularies or item table.

  Example:

    model = tfrs_din.training.load_model("models/din")
    path = export_saved_model(model, "models/din/export", data_dir="data/")
    # tensorflow_model_server --model_base_path=$PWD/models/din/export ...
  """
  version = int(time.time()) if version is None else int(version)
  path = os.path.join(export_base, str(version))
  if tf.io.gfile.exists(path):
    raise FileExistsError(f"export version {path!r} already exists")
  staging = tempfile.mkdtemp(prefix="tfrs_din_lookup_")
  try:
    lookup = None
    if data_dir is not None:
      lookup = RawIdLookup(
          model.spec, write_lookup_files(data_dir, model.spec, staging),
          id_dtype)
    module = ServingModule(model, lookup, fast_scoring, jit_compile)
    signatures = module.signatures()
    tf.saved_model.save(module, path, signatures=signatures)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  assets = os.path.join(path, "assets.extra")
  tf.io.gfile.makedirs(assets)
  with tf.io.TFRecordWriter(
      os.path.join(assets, "tf_serving_warmup_requests")) as writer:
    for log in _warmup_requests(model.spec, model_name, sorted(signatures),
                                id_dtype if data_dir is not None else None):
      writer.write(log.SerializeToString())
  return path


def rest_instances_to_tensors(instances, signature_inputs) -> Dict[str, np.ndarray]:
  """Stacks TF Serving REST "instances" (row format) into named arrays."""
  return {name: np.asarray([row[name] for row in instances],
                           dtype=spec.dtype.as_numpy_dtype)
          for name, spec in signature_inputs.items()}
