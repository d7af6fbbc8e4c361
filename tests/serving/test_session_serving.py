"""Exports loaded the way TF Serving loads them: a TF1 session over the
SavedModel's graph, fed by the signature defs' tensor names. Every signature
of every model (base, DIN, DIEN; plain and XLA exports) answers the README's
request bodies as `tf.saved_model.load` does, and a request of the wrong
shape, which the session feeds as it comes, fails with the input's name
first."""

import base64
import json
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

import serving_data as sd
from tfrs_din.models import BaseModel, DIENModel, DINModel
from tfrs_din.serving.export import export_saved_model

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
TOL = dict(rtol=1e-5, atol=1e-6)
EXPORTS = [(BaseModel, False), (BaseModel, True), (DINModel, False),
           (DINModel, True), (DIENModel, False), (DIENModel, True)]


def readme_bodies() -> dict:
  """The REST bodies of README.md's `curl -d '...'` requests, by signature
  name; the bodies it only describes (`score_candidates_indices`) or elides
  (the base64 `tf.Example`) are built from its `predict_indices` instance."""
  bodies = {}
  for raw in re.findall(r"curl -d '(\{.*?\})'", README.read_text(), re.S):
    body = json.loads(raw)
    bodies[body.get("signature_name", "serving_default")] = body
  assert sorted(bodies) == ["predict_examples", "predict_indices",
                            "score_candidates", "serving_default"], bodies
  row = bodies["predict_indices"]["instances"][0]
  candidates = dict(row)
  candidates["candidate_item_id"] = [candidates.pop("item_id")] + row[
      "hist_item_id"]
  candidates["candidate_category_id"] = [candidates.pop("category_id")] + row[
      "hist_category_id"]
  bodies["score_candidates_indices"] = {
      "signature_name": "score_candidates_indices", "instances": [candidates]}
  example = tf.train.Example(features=tf.train.Features(feature={
      k: tf.train.Feature(int64_list=tf.train.Int64List(
          value=v if isinstance(v, list) else [v]))
      for k, v in row.items() if k != "hist_length"}))
  examples = bodies["predict_examples"]["inputs"]["examples"]
  assert examples == [{"b64": "<base64 tf.Example>"}]
  examples[0]["b64"] = base64.b64encode(example.SerializeToString()).decode()
  return bodies


def _vocabularies(bodies):
  """Vocabularies holding the README's raw ids, large enough for its
  indices (index 2 is the first id of each)."""
  raw = [bodies["score_candidates"]["instances"][0],
         {k: v[0] for k, v in bodies["serving_default"]["inputs"].items()}]
  users = sorted({r["user_id"] for r in raw})
  items = sorted({i for r in raw for k in ("hist_item_id", "item_id",
                                           "candidate_item_id")
                  for i in np.ravel(r.get(k, [])) if i})
  row = bodies["predict_indices"]["instances"][0]
  most = {k: max(np.ravel(row[k]).tolist()
                 + np.ravel(row.get("hist_" + k, [])).tolist())
          for k in ("user_id", "item_id", "category_id")}
  users += [f"user{i}" for i in range(most["user_id"] - 1 - len(users))]
  items += [f"item{i}" for i in range(most["item_id"] - 1 - len(items))]
  categories = [f"category{i}" for i in range(most["category_id"] - 1)]
  table = {item: categories[i % len(categories)]
           for i, item in enumerate(items)}
  return users, items, categories, table


@pytest.fixture(scope="module")
def bodies():
  return readme_bodies()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, bodies):
  directory = str(tmp_path_factory.mktemp("readme") / "data")
  return directory, sd.write_prepared(directory, *_vocabularies(bodies))


def _model(cls, spec):
  tf.keras.utils.set_random_seed(2)
  extra = {DINModel: dict(attention_units=(8, 4)),
           DIENModel: dict(gru_units=4)}.get(cls, {})
  model = cls(spec, mlp_units=(8, 4), **extra)
  model.build_all()
  for v in model.variables:   # every embedding row and statistic matters
    if "embedding" in v.name:
      v.assign(tf.random.normal(v.shape, stddev=1.0, seed=3))
    elif "moving_variance" in v.name:
      v.assign(tf.random.uniform(v.shape, 0.2, 3.0, seed=4))
    elif any(k in v.name for k in ("moving_mean", "alpha", "bias", "gamma",
                                   "beta")):
      v.assign(tf.random.normal(v.shape, stddev=0.5, seed=5))
  return model


@pytest.fixture(scope="module")
def exports(prepared, tmp_path_factory):
  """(model class, jit_compile) -> export path, made on first use."""
  data_dir, spec = prepared
  paths = {}

  def get(cls, jit_compile):
    if (cls, jit_compile) not in paths:
      base = tmp_path_factory.mktemp(f"{cls.__name__}_{jit_compile}")
      paths[cls, jit_compile] = export_saved_model(
          _model(cls, spec), str(base), version=1, data_dir=data_dir,
          jit_compile=jit_compile)
    return paths[cls, jit_compile]
  return get


def _feeds(body, inputs) -> dict:
  """A REST body as TF Serving feeds it: row format stacked along a new
  first axis, strings as bytes, {"b64": ...} decoded; dtypes from the
  signature def's `inputs` (name -> TensorInfo)."""
  if "instances" in body:
    columns = {k: [row[k] for row in body["instances"]] for k in inputs}
  else:
    columns = body["inputs"]

  def leaf(v):
    if isinstance(v, dict):
      return base64.b64decode(v["b64"])
    return v.encode() if isinstance(v, str) else v

  out = {}
  for name, info in inputs.items():
    dtype = tf.dtypes.as_dtype(info.dtype)
    value = np.vectorize(leaf, otypes=[object])(
        np.asarray(columns[name], object))
    out[name] = (value if dtype == tf.string
                 else value.astype(dtype.as_numpy_dtype))
  return out


class Session:
  """A SavedModel in a TF1 session, as TF Serving holds it."""

  def __init__(self, path: str):
    self.graph = tf.Graph()
    self.session = tf.compat.v1.Session(graph=self.graph)
    with self.graph.as_default():
      defs = tf.compat.v1.saved_model.load(self.session, ["serve"],
                                           path).signature_def
    # Not "__saved_model_init_op" (table initialisation, run by the load).
    self.signatures = {k: v for k, v in defs.items()
                       if not k.startswith("__")}
    self._callables = {}

  def run(self, name: str, feeds: dict) -> dict:
    signature = self.signatures[name]
    return self.session.run(
        {k: v.name for k, v in signature.outputs.items()},
        {signature.inputs[k].name: v for k, v in feeds.items()})

  def run_unchecked(self, name: str, feeds: dict) -> dict:
    """`run` without `Session.run`'s Python check of the feeds' shapes
    against the signature: TF Serving's C++ session has none."""
    signature = self.signatures[name]
    names = sorted(feeds)
    outputs = sorted(signature.outputs)
    if name not in self._callables:   # one per signature: each costs a
      self._callables[name] = self.session._make_callable_from_options(  # pylint: disable=protected-access
          config_pb2.CallableOptions(    # graph optimisation
              feed=[signature.inputs[k].name for k in names],
              fetch=[signature.outputs[k].name for k in outputs]))
    results = self._callables[name](*[feeds[k] for k in names])
    return dict(zip(outputs, results))


@pytest.mark.parametrize("cls,jit_compile", EXPORTS)
def test_every_signature_answers_the_readme_bodies_like_tf2(
    cls, jit_compile, bodies, exports):
  path = exports(cls, jit_compile)
  loaded = tf.saved_model.load(path)
  session = Session(path)
  assert sorted(session.signatures) == sorted(loaded.signatures) == sorted(
      bodies)
  answers = {}
  for name, body in bodies.items():
    feeds = _feeds(body, session.signatures[name].inputs)
    specs = loaded.signatures[name].structured_input_signature[1]
    expected = loaded.signatures[name](**{
        k: tf.constant(v, specs[k].dtype) for k, v in feeds.items()})
    got = answers[name] = session.run(name, feeds)
    assert sorted(got) == sorted(expected), name
    for key, value in expected.items():
      assert got[key].shape == value.shape, name
      np.testing.assert_allclose(got[key], value, err_msg=name, **TOL)
      assert np.all((value > 0) & (value < 1)), name
  # The README's candidates, known ids, get different probabilities.
  for name in ("score_candidates", "score_candidates_indices"):
    assert np.ptp(answers[name]["probabilities"]) > 1e-4, name


def _other_ranks(value: np.ndarray):
  """`value` with one axis more, and with one fewer (its first column or
  element): what a client sends for a list where a scalar goes and back."""
  yield value[..., np.newaxis]
  yield value[..., 0] if value.ndim > 1 else value[0]


def test_inputs_of_the_wrong_rank_are_named_first(bodies, exports):
  # The checks wrap every signature's inputs alike, whatever the model.
  session = Session(exports(DINModel, False))
  for name, body in bodies.items():
    inputs = session.signatures[name].inputs
    feeds = _feeds(body, inputs)
    assert session.run_unchecked(name, feeds)   # the body itself is valid
    for key, value in feeds.items():
      rank = len(inputs[key].tensor_shape.dim)
      for bad in _other_ranks(value):
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
          session.run_unchecked(name, dict(feeds, **{key: bad}))
        first = error.value.message.split("\n")[0]
        assert first.startswith(f"assertion failed: [{key}: expected "), (
            name, key, first)
        assert f"(shape [batch{', ' if rank == 2 else ']'}" in first, first
        assert f"got rank {np.ndim(bad)}" in first, first


def test_inputs_of_different_batch_sizes_are_named_first(bodies, exports):
  session = Session(exports(DINModel, False))
  feeds = _feeds(bodies["score_candidates"],
                 session.signatures["score_candidates"].inputs)
  # Inputs are compared with the first by name (candidate_item_id).
  doubled = dict(feeds, user_id=np.repeat(feeds["user_id"], 2, 0))
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    session.run_unchecked("score_candidates", doubled)
  assert error.value.message.split("\n")[0] == (
      "assertion failed: [user_id: expected 1 rows (the batch size of "
      "candidate_item_id), got 2; every input must have the same batch size "
      "(first dimension)]")
