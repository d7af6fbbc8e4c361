"""TF Serving requests for the export's signatures, and a server stand-in.

Builders (what a client sends):
  `predict_instance`, `candidates_instance`  one raw-id row of
      `serving_default` / `score_candidates`
  `rest_body`          REST JSON body, row (`instances`) or columnar (`inputs`)
  `predict_request`    gRPC `tensorflow.serving.PredictRequest`

Stand-in (how TF Serving turns a request into tensors, and answers errors,
for tests and local checks against `tf.saved_model.load`):
  `tensors_from_rest`, `tensors_from_request`, `run_signature`,
  `server_message`

Row format: every instance is a dict of the signature's inputs and instances
are stacked along a new axis 0, so each input must have the same shape in
every instance. Strings are JSON strings; binary strings (serialized
Examples) are `{"b64": base64}`. Conversion errors raise
`tf.errors.InvalidArgumentError` naming the input, as TF Serving answers
INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

HISTORY = "hist_item_id"
CANDIDATES = "candidate_item_id"
ITEM = "item_id"

RawId = Union[str, int]


def _id(value: RawId) -> str:
  """A raw id as the string `prepare` read (ints as their decimal string)."""
  if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
    raise TypeError(f"raw ids are str or int, got {type(value).__name__}")
  return str(value)


def predict_instance(user: Mapping[str, RawId], history: Sequence[RawId],
                     item: RawId) -> Dict[str, Any]:
  """One row of the raw-id `serving_default`.

  Args:
    user: user features by name, e.g. {"user_id": "A3R5OBKS7OM2IR"}.
    history: the user's behaviour item ids, oldest first.
    item: the candidate item id.
  """
  row = {name: _id(v) for name, v in user.items()}
  row[HISTORY] = [_id(v) for v in history]
  row[ITEM] = _id(item)
  return row


def candidates_instance(user: Mapping[str, RawId], history: Sequence[RawId],
                        candidates: Sequence[RawId]) -> Dict[str, Any]:
  """One row (one user) of the raw-id `score_candidates`.

  Args:
    user: user features by name.
    history: the user's behaviour item ids, oldest first.
    candidates: the N item ids to score.
  """
  row = {name: _id(v) for name, v in user.items()}
  row[HISTORY] = [_id(v) for v in history]
  row[CANDIDATES] = [_id(v) for v in candidates]
  return row


def _pad_histories(rows: Sequence[Dict[str, Any]]) -> list:
  """Pads raw `hist_item_id` lists with "" to a common length."""
  if not rows or not all(isinstance(r.get(HISTORY), list) for r in rows):
    return list(rows)
  if not all(isinstance(v, str) for r in rows for v in r[HISTORY]):
    return list(rows)
  width = max(len(r[HISTORY]) for r in rows)
  return [dict(r, **{HISTORY: r[HISTORY] + [""] * (width - len(r[HISTORY]))})
          for r in rows]


def _jsonable(value):
  if isinstance(value, np.ndarray):
    value = value.tolist()
  if isinstance(value, bytes):
    return {"b64": base64.b64encode(value).decode("ascii")}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def rest_body(signature_name: str,
              instances: Optional[Sequence[Mapping[str, Any]]] = None,
              inputs: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """The JSON body of `POST /v1/models/<name>:predict`.

  Pass `instances` (row format) or `inputs` (columnar). Raw-id histories of
  different lengths are padded with ""; bytes become `{"b64": ...}`.

  Args:
    signature_name: e.g. "score_candidates".
    instances: one dict per example (row format).
    inputs: one batched value per input (columnar format).
  """
  if (instances is None) == (inputs is None):
    raise ValueError("pass exactly one of instances or inputs")
  body: Dict[str, Any] = {"signature_name": signature_name}
  if instances is not None:
    body["instances"] = [{k: _jsonable(v) for k, v in row.items()}
                         for row in _pad_histories(instances)]
  else:
    body["inputs"] = {k: _jsonable(v) for k, v in inputs.items()}
  return body


def predict_request(signature_name: str, inputs: Mapping[str, Any],
                    model_name: str = "tfrs_din"):
  """A gRPC `PredictRequest` from batched inputs (columns).

  Strings (str or bytes) become DT_STRING, Python ints DT_INT64 and floats
  DT_FLOAT, the dtypes of the export's signatures.

  Args:
    signature_name: e.g. "serving_default".
    inputs: input name -> batched value (nested lists or arrays).
    model_name: the model's name on the server.
  """
  from tensorflow_serving.apis import model_pb2, predict_pb2  # pylint: disable=g-import-not-at-top
  request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
      name=model_name, signature_name=signature_name))
  for name, value in inputs.items():
    array = np.asarray(value)
    if array.dtype.kind in "US":
      array = np.vectorize(
          lambda s: s.encode("utf-8") if isinstance(s, str) else s,
          otypes=[object])(array) if array.size else array.astype(object)
    elif array.dtype.kind == "i":
      array = array.astype(np.int64)
    elif array.dtype.kind == "f":
      array = array.astype(np.float32)
    request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
  return request


# Server stand-in --------------------------------------------------------------
def _invalid(message: str) -> tf.errors.InvalidArgumentError:
  return tf.errors.InvalidArgumentError(None, None, message)


def _shape(value, name: str) -> tuple:
  """Shape of a nested list; raises if rows have different lengths."""
  if not isinstance(value, list):
    return ()
  shapes = {_shape(v, name) for v in value}
  if len(shapes) > 1:
    raise _invalid(f"input {name!r}: rows have different lengths "
                   f"{sorted(shapes)}; pad them to the same length")
  return (len(value),) + (shapes.pop() if shapes else ())


def _leaf(value, dtype: tf.DType, name: str):
  if dtype == tf.string:
    if isinstance(value, dict) and set(value) == {"b64"}:
      return base64.b64decode(value["b64"])
    if isinstance(value, str):
      return value.encode("utf-8")
  elif dtype.is_integer:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  elif dtype.is_floating:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return value
  raise _invalid(f"input {name!r}: expected {dtype.name} values, got "
                 f"{type(value).__name__} {value!r}")


def _to_tensor(value, spec: tf.TensorSpec, name: str) -> tf.Tensor:
  shape = _shape(value, name)
  if len(shape) != spec.shape.rank:
    raise _invalid(f"input {name!r}: expected rank {spec.shape.rank} "
                   f"(shape {spec.shape}), got shape {list(shape)}")
  flat = np.asarray(value, dtype=object).reshape(-1) if shape else [value]
  leaves = [_leaf(v, spec.dtype, name) for v in flat]
  array = np.asarray(leaves, dtype=object if spec.dtype == tf.string
                     else spec.dtype.as_numpy_dtype).reshape(shape)
  return tf.constant(array, spec.dtype)


def _input_specs(signature) -> Dict[str, tf.TensorSpec]:
  return signature.structured_input_signature[1]


def _check_names(names, specs: Mapping[str, tf.TensorSpec], where: str) -> None:
  missing = sorted(set(specs) - set(names))
  unknown = sorted(set(names) - set(specs))
  if missing:
    raise _invalid(f"{where}: missing input(s) {missing}")
  if unknown:
    raise _invalid(f"{where}: unknown input(s) {unknown}; the signature "
                   f"takes {sorted(specs)}")


def tensors_from_rest(body: Mapping[str, Any], signature) -> Dict[str, tf.Tensor]:
  """A REST predict body as the signature's input tensors.

  Args:
    body: `{"instances": [...]}` (row format: per-example dicts stacked
      along axis 0) or `{"inputs": {...}}` (columnar).
    signature: a signature of `tf.saved_model.load(...)`.signatures.
  """
  specs = _input_specs(signature)
  if "instances" in body:
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
      raise _invalid("'instances' must be a non-empty list")
    if len(specs) == 1 and not isinstance(rows[0], dict):
      rows = [{next(iter(specs)): r} for r in rows]
    for i, row in enumerate(rows):
      if not isinstance(row, dict):
        raise _invalid(f"instance {i} is not an object")
      _check_names(row, specs, f"instance {i}")
    columns = {name: [row[name] for row in rows] for name in specs}
  elif "inputs" in body:
    columns = body["inputs"]
    if len(specs) == 1 and not isinstance(columns, dict):
      columns = {next(iter(specs)): columns}
    _check_names(columns, specs, "inputs")
  else:
    raise _invalid("the body needs 'instances' or 'inputs'")
  return {name: _to_tensor(columns[name], spec, name)
          for name, spec in specs.items()}


def tensors_from_request(request, signature) -> Dict[str, tf.Tensor]:
  """A gRPC `PredictRequest`'s inputs as the signature's input tensors."""
  specs = _input_specs(signature)
  _check_names(request.inputs, specs, "request")
  out = {}
  for name, spec in specs.items():
    proto = request.inputs[name]
    dtype = tf.dtypes.as_dtype(proto.dtype)
    if dtype != spec.dtype:
      raise _invalid(f"input {name!r}: expected {spec.dtype.name}, got "
                     f"{dtype.name}")
    value = tf.constant(tf.make_ndarray(proto), spec.dtype)
    if value.shape.rank != spec.shape.rank:
      raise _invalid(f"input {name!r}: expected rank {spec.shape.rank}, got "
                     f"shape {value.shape.as_list()}")
    out[name] = value
  return out


_PREAMBLE = "Graph execution error:"
_NO_TRACE = "<stack traces unavailable>"


def server_message(message: str) -> str:
  """The op's own error message, as TF Serving answers it.

  A Python caller of a loaded export sees "Graph execution error:", then
  where each failing node was defined, then the op's message; TF Serving
  returns the op's message alone (for the export's input checks, "assertion
  failed: [<input>: expected ...]"). Other messages are returned unchanged.

  Args:
    message: `tf.errors.OpError.message`.
  """
  lines = message.split("\n")
  if lines[0] != _PREAMBLE:
    return message
  start = 1
  for i, line in enumerate(lines):
    if line.startswith("Detected at node "):   # then its definition's frames
      start = i + 1
      while start < len(lines) and (lines[start] == _NO_TRACE
                                    or lines[start].startswith("  ")):
        start += 1
  return "\n".join(lines[start:]).strip("\n")


def run_signature(loaded, request) -> Dict[str, np.ndarray]:
  """Answers a REST body (dict) or a `PredictRequest` with a loaded export.

  Errors are raised as the server answers them: the same
  `tf.errors.OpError` class, with the op's own message (`server_message`).

  Args:
    loaded: `tf.saved_model.load(export_dir)`.
    request: a REST body from `rest_body` or a `PredictRequest`.
  """
  if isinstance(request, Mapping):
    signature = loaded.signatures[request.get("signature_name",
                                              "serving_default")]
    tensors = tensors_from_rest(request, signature)
  else:
    signature = loaded.signatures[request.model_spec.signature_name
                                  or "serving_default"]
    tensors = tensors_from_request(request, signature)
  try:
    outputs = signature(**tensors)
  except tf.errors.OpError as error:
    raise type(error)(error.node_def, error.op,
                      server_message(error.message)) from None
  return {k: v.numpy() for k, v in outputs.items()}
