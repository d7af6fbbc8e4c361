"""Raw-id signatures: a TF Serving client sends raw ids (no vocabularies, no
item features) and gets the probabilities the model gives the indices a
reference mapping computes; bad requests are refused naming the input."""

import base64
import json
import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

import serving_data as sd
from fresh_process import run_requests
from tfrs_din.models import DIENModel, DINModel
from tfrs_din.serving import client
from tfrs_din.serving.export import export_saved_model

TOL = dict(rtol=1e-5, atol=1e-6)
USER = {"user_id": "102"}
# Unknown ids (999, 9999), an OOV item with a known category (5006), an item
# whose category is OOV (5007), padding in the middle, a history longer than
# MAX_HISTORY = 4.
ROWS = [("101", ["5001", "5002"], "5003"),
        ("999", ["5004", "", "5005", "5006", "5002", "5001"], "5006"),
        ("103", [], "9999"),
        ("102", ["9999", "5007", ""], "5007")]
CANDIDATES = ["5003", "5006", "9999", "5002", "5007"]


def _model(cls, spec):
  tf.keras.utils.set_random_seed(1)
  extra = dict(attention_units=(8, 4)) if cls is DINModel else dict(gru_units=4)
  model = cls(spec, mlp_units=(8, 4), regularization=None, **extra)
  model.build_all()
  # Large random embeddings so that every looked-up index moves the score.
  for v in model.trainable_variables:
    if "embedding" in v.name:
      v.assign(tf.random.normal(v.shape, stddev=1.0, seed=2))
  return model


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("serving") / "data")
  return directory, sd.write_prepared(directory)


@pytest.fixture(scope="module")
def din_export(prepared, tmp_path_factory):
  data_dir, spec = prepared
  model = _model(DINModel, spec)
  base = str(tmp_path_factory.mktemp("din") / "export")
  path = export_saved_model(model, base, version=1, data_dir=data_dir)
  return model, path, tf.saved_model.load(path)


def _expected_rows(model):
  features = sd.index_features(*map(list, zip(*ROWS)))
  return model(features, training=False).numpy()


def _expected_candidates(model, user, history):
  n = len(CANDIDATES)
  features = sd.index_features([user] * n, [history] * n, CANDIDATES)
  return model(features, training=False).numpy()[None]


def _raw_requests():
  """Every request shape of the raw-id signatures (REST rows, REST columns,
  gRPC); the histories of the row format differ in length (padded by
  `rest_body`)."""
  rows = [client.predict_instance({"user_id": u}, h, i) for u, h, i in ROWS]
  width = max(len(h) for _, h, _ in ROWS)
  columns = {"user_id": [u for u, _, _ in ROWS],
             "hist_item_id": [h + [""] * (width - len(h)) for _, h, _ in ROWS],
             "item_id": [i for _, _, i in ROWS]}
  one_user = client.candidates_instance(USER, ROWS[1][1], CANDIDATES)
  cand_columns = {k: [v] for k, v in one_user.items()}
  return {
      "rows": client.rest_body("serving_default", instances=rows),
      "columns": client.rest_body("serving_default", inputs=columns),
      "grpc_rows": client.predict_request("serving_default", columns),
      "candidates_rows": client.rest_body("score_candidates",
                                          instances=[one_user]),
      "candidates_columns": client.rest_body("score_candidates",
                                             inputs=cand_columns),
      "candidates_grpc": client.predict_request("score_candidates",
                                                cand_columns),
  }


def _index_requests():
  """The same rows as vocabulary indices (reference mapping)."""
  features = sd.index_features(*map(list, zip(*ROWS)))
  index_rows = {k: v.numpy().tolist() for k, v in features.items()}
  n = len(CANDIDATES)
  cand = sd.index_features([USER["user_id"]] * n, [ROWS[1][1]] * n, CANDIDATES)
  cand_columns = {k: cand[k].numpy()[:1].tolist() for k in
                  ("user_id", "hist_item_id", "hist_category_id",
                   "hist_length")}
  cand_columns["candidate_item_id"] = [cand["item_id"].numpy().tolist()]
  cand_columns["candidate_category_id"] = [cand["category_id"].numpy().tolist()]
  return {
      "index_columns": client.rest_body("predict_indices", inputs=index_rows),
      "index_candidates_grpc": client.predict_request(
          "score_candidates_indices", cand_columns),
  }


def test_every_request_shape_matches_the_reference_indices(din_export):
  model, _, loaded = din_export
  expected = _expected_rows(model)
  expected_cand = _expected_candidates(model, USER["user_id"], ROWS[1][1])
  assert np.ptp(expected) > 1e-3 and np.ptp(expected_cand) > 1e-3
  out = {k: client.run_signature(loaded, r)
         for k, r in {**_raw_requests(), **_index_requests()}.items()}
  for key in ("rows", "columns", "grpc_rows", "index_columns"):
    np.testing.assert_allclose(out[key]["probability"], expected, **TOL)
  for key in ("candidates_rows", "candidates_columns", "candidates_grpc",
              "index_candidates_grpc"):
    np.testing.assert_allclose(out[key]["probabilities"], expected_cand, **TOL)


def test_lookup_semantics(din_export):
  """Unknown ids are OOV for every feature, padding anywhere is dropped, only
  the most recent MAX_HISTORY behaviours count."""
  _, _, loaded = din_export
  score = loaded.signatures["serving_default"]

  def p(history, item="5003", user="101"):
    return score(user_id=tf.constant([user]), hist_item_id=tf.constant(
        [history], tf.string), item_id=tf.constant([item]))["probability"
                                                           ].numpy()[0]

  long = ["5005", "5004", "5001", "5002", "5003", "5004"]
  assert p(long) == pytest.approx(p(long[-4:]), abs=1e-6)
  assert p(long) != pytest.approx(p(long[:4]), abs=1e-4)
  assert p(["", "5001", "", "5002"]) == pytest.approx(p(["5001", "5002"]),
                                                      abs=1e-6)
  assert p(["9999"], item="8888") == pytest.approx(p(["7777"], item="6666"),
                                                   abs=1e-6)
  assert p([], user="nobody") == pytest.approx(p([], user="999"), abs=1e-6)
  assert p([], user="101") != pytest.approx(p([], user="999"), abs=1e-4)


def test_lookup_files_travel_as_assets(din_export):
  _, path, _ = din_export
  with open(os.path.join(path, "assets", "item__category_id.tsv")) as f:
    pairs = dict(line.split("\t") for line in f.read().splitlines())
  assert {k: int(v) for k, v in pairs.items()} == {
      k: sd.item_indices(k)["category_id"] for k in sd.ITEM_TABLE}
  with open(os.path.join(path, "assets", "item_id.tsv")) as f:
    assert f.read() == "".join(f"{k}\t{i + 2}\n" for i, k in enumerate(sd.ITEMS))


def test_warmup_requests_run_against_the_export(din_export):
  _, path, loaded = din_export
  seen = {}
  warm = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
  for record in tf.data.TFRecordDataset(warm):
    request = prediction_log_pb2.PredictionLog.FromString(
        record.numpy()).predict_log.request
    out = client.run_signature(loaded, request)
    seen[request.model_spec.signature_name] = {
        k: v.shape for k, v in out.items()}
    assert all(np.all((v > 0) & (v < 1)) for v in out.values())
  assert seen == {"serving_default": {"probability": (2,)},
                  "score_candidates": {"probabilities": (2, 3)},
                  "predict_indices": {"probability": (2,)},
                  "score_candidates_indices": {"probabilities": (2, 3)},
                  "predict_examples": {"probability": (1,)}}


def test_predict_examples_takes_base64_in_rest(din_export):
  model, _, loaded = din_export
  features = sd.index_features(*map(list, zip(*ROWS)))
  examples = []
  for i in range(len(ROWS)):
    n = int(features["hist_length"][i])
    feats = {k: tf.train.Feature(int64_list=tf.train.Int64List(
        value=[int(features[k][i])])) for k in ("user_id", "item_id",
                                                 "category_id")}
    for k in ("hist_item_id", "hist_category_id"):
      feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(
          value=features[k][i][:n].numpy().tolist()))
    examples.append(tf.train.Example(features=tf.train.Features(
        feature=feats)).SerializeToString())
  body = client.rest_body("predict_examples", inputs={"examples": examples})
  assert body["inputs"]["examples"][0] == {
      "b64": base64.b64encode(examples[0]).decode()}
  out = client.run_signature(loaded, json.loads(json.dumps(body)))
  np.testing.assert_allclose(out["probability"], _expected_rows(model), **TOL)


# Bad requests -----------------------------------------------------------------
def _candidates_body(**override):
  row = client.candidates_instance(USER, ["5001"], ["5002", "5003"])
  row.update(override)
  return row


@pytest.mark.parametrize("body, message", [
    # Ragged rows: candidate lists of different lengths.
    ({"signature_name": "score_candidates", "instances": [
        _candidates_body(), _candidates_body(candidate_item_id=["5001"])]},
     "input 'candidate_item_id': rows have different lengths"),
    # Wrong dtype: a number for a string id.
    ({"signature_name": "score_candidates",
      "instances": [_candidates_body(user_id=102)]},
     "input 'user_id': expected string values, got int 102"),
    ({"signature_name": "predict_indices", "inputs": {"user_id": ["1"]}},
     "inputs: missing input(s)"),
    ({"signature_name": "score_candidates",
      "instances": [dict(_candidates_body(), category_id="books")]},
     "unknown input(s) ['category_id']"),
    ({"signature_name": "score_candidates",
      "inputs": {"user_id": "102", "hist_item_id": [["5001"]],
                 "candidate_item_id": [["5002"]]}},
     "input 'user_id': expected rank 1"),
])
def test_malformed_rest_bodies_name_the_input(din_export, body, message):
  _, _, loaded = din_export
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    client.run_signature(loaded, body)
  assert message in error.value.message


def test_grpc_request_with_wrong_dtype_is_refused(din_export):
  _, _, loaded = din_export
  request = client.predict_request("score_candidates", {
      "user_id": [102], "hist_item_id": [["5001"]],
      "candidate_item_id": [["5002"]]})
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="input 'user_id': expected string, got int64"):
    client.run_signature(loaded, request)
  # Called directly, the signature refuses it too (as TF Serving does).
  with pytest.raises(tf.errors.InvalidArgumentError, match="string tensor"):
    loaded.signatures["score_candidates"](
        user_id=tf.constant([102], tf.int64),
        hist_item_id=tf.constant([["5001"]]),
        candidate_item_id=tf.constant([["5002"]]))


@pytest.mark.parametrize("inputs, message", [
    (dict(user_id=[""], hist_item_id=[["5001"]], candidate_item_id=[["5002"]]),
     "user_id: expected non-empty ids, got an empty id"),
    (dict(user_id=["102"], hist_item_id=[["5001"]],
          candidate_item_id=np.zeros([1, 0], object)),
     "candidate_item_id: expected at least one candidate per row, got shape "
     "[1 0]"),
    (dict(user_id=["102"], hist_item_id=[["5001"]],
          candidate_item_id=[["5002", ""]]),
     "candidate_item_id: expected non-empty ids, got an empty id"),
    (dict(user_id=["102", "101"], hist_item_id=[["5001"]],
          candidate_item_id=[["5002"], ["5001"]]),
     "hist_item_id: expected 2 rows (the batch size of candidate_item_id), "
     "got 1; every input must have the same batch size"),
])
def test_invalid_values_raise_in_the_graph(din_export, inputs, message):
  _, _, loaded = din_export
  tensors = {k: tf.constant(np.asarray(v, object).astype(bytes)
                            if np.asarray(v).size else np.asarray(v, object),
                            tf.string) for k, v in inputs.items()}
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    loaded.signatures["score_candidates"](**tensors)
  assert message in error.value.message
  # The server stand-in answers with the check's message first, as TF
  # Serving does.
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    client.run_signature(loaded, client.predict_request(
        "score_candidates", {k: np.asarray(v, object) for k, v in
                             inputs.items()}))
  assert error.value.message.startswith(f"assertion failed: [{message}")


def test_server_message_is_the_ops_own():
  op_message = ("assertion failed: [user_id: expected one string per row]\n"
                "\t [[{{node Assert_2/Assert}}]]")
  wrapped = ("Graph execution error:\n\nDetected at node Assert_2/Assert "
             "defined at (most recent call last):\n<stack traces unavailable>"
             "\nDetected at node Other defined at (most recent call last):\n"
             '  File "x.py", line 3, in f\n    g()\n' + op_message)
  assert client.server_message(wrapped) == op_message
  assert client.server_message(op_message) == op_message


def test_index_score_candidates_refuses_an_empty_candidate_list(din_export):
  _, _, loaded = din_export
  sig = loaded.signatures["score_candidates_indices"]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="candidate_item_id: expected at least one candidate"):
    sig(user_id=tf.constant([2], tf.int64),
        hist_item_id=tf.constant([[2]], tf.int64),
        hist_category_id=tf.constant([[2]], tf.int64),
        hist_length=tf.constant([1], tf.int64),
        candidate_item_id=tf.zeros([1, 0], tf.int64),
        candidate_category_id=tf.zeros([1, 0], tf.int64))


# Export options ---------------------------------------------------------------
def test_int64_ids_give_the_string_probabilities(prepared, din_export,
                                                 tmp_path):
  model, _, loaded = din_export
  data_dir, _ = prepared
  path = export_saved_model(model, str(tmp_path / "int"), version=1,
                            data_dir=data_dir, id_dtype=tf.int64)
  as_int = tf.saved_model.load(path).signatures["score_candidates"]
  history = [5004, -1, 5005, 5006, 5002, 5001]  # -1: padding
  got = as_int(user_id=tf.constant([102], tf.int64),
               hist_item_id=tf.constant([history], tf.int64),
               candidate_item_id=tf.constant([[int(c) for c in CANDIDATES]],
                                             tf.int64))["probabilities"]
  np.testing.assert_allclose(
      got, _expected_candidates(model, USER["user_id"], ROWS[1][1]), **TOL)
  # The string export answers the same ids given as decimal strings.
  ref = loaded.signatures["score_candidates"](
      user_id=tf.constant(["102"]),
      hist_item_id=tf.constant([[str(h) if h >= 0 else "" for h in history]]),
      candidate_item_id=tf.constant([CANDIDATES]))["probabilities"]
  np.testing.assert_allclose(got, ref, **TOL)


def test_export_refuses_a_data_dir_that_does_not_match(prepared, din_export,
                                                       tmp_path):
  model, _, _ = din_export
  data_dir, _ = prepared
  other = str(tmp_path / "other")
  sd.write_prepared(other)
  os.remove(os.path.join(other, "item_table.tsv"))
  with pytest.raises(FileNotFoundError, match="item_table.tsv does not exist"):
    export_saved_model(model, str(tmp_path / "e"), 1, data_dir=other)
  with open(os.path.join(other, "vocab", "item_id.tsv"), "a") as f:
    f.write("99\textra\t1\n")
  with pytest.raises(ValueError, match="'item_id': the vocabulary in .* has 8 "
                     "rows but the model was trained with 7"):
    export_saved_model(model, str(tmp_path / "e"), 2, data_dir=other)
  assert not os.path.exists(str(tmp_path / "e" / "1"))


# Fresh process ---------------------------------------------------------------
# TensorFlow and the serving protos only: REST bodies stacked the way the
# server does (row format = per-example dicts stacked along axis 0), gRPC
# requests parsed from their bytes.
FRESH = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    export, requests_path, out_path = sys.argv[1:]
    loaded = tf.saved_model.load(export)
    assert not any(m.split(".")[0] in ("tfrs_din", "beam_jobs")
                   for m in sys.modules)
    out = {}
    for key, req in json.load(open(requests_path)).items():
        if "grpc" in req:
            request = predict_pb2.PredictRequest.FromString(
                bytes.fromhex(req["grpc"]))
            sig = loaded.signatures[request.model_spec.signature_name]
            inputs = {k: tf.constant(tf.make_ndarray(v))
                      for k, v in request.inputs.items()}
        else:
            sig = loaded.signatures[req["signature_name"]]
            specs = sig.structured_input_signature[1]
            if "instances" in req:
                cols = {k: [row[k] for row in req["instances"]] for k in specs}
            else:
                cols = req["inputs"]
            inputs = {k: tf.constant(np.asarray(cols[k], dtype=object if
                                                specs[k].dtype == tf.string
                                                else np.int64), specs[k].dtype)
                      for k in specs}
        out[key] = {k: v.numpy().tolist() for k, v in sig(**inputs).items()}
    json.dump(out, open(out_path, "w"))
''')


@pytest.mark.parametrize("cls,jit_compile", [
    (DINModel, False), (DIENModel, False), (DINModel, True),
    (DIENModel, True)])
def test_raw_and_index_requests_agree_in_a_fresh_process(cls, jit_compile,
                                                         prepared, tmp_path):
  data_dir, spec = prepared
  model = _model(cls, spec)
  path = export_saved_model(model, str(tmp_path / "export"), version=1,
                            data_dir=data_dir, jit_compile=jit_compile)
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    assert (b"_XlaMustCompile" in f.read()) == jit_compile
  requests = {}
  for key, request in {**_raw_requests(), **_index_requests()}.items():
    if isinstance(request, predict_pb2.PredictRequest):
      request = {"grpc": request.SerializeToString().hex()}
    requests[key] = request
  out = run_requests(FRESH, path, requests, tmp_path)

  expected = _expected_rows(model)
  expected_cand = _expected_candidates(model, USER["user_id"], ROWS[1][1])
  for key in ("rows", "columns", "grpc_rows"):  # raw ids
    np.testing.assert_allclose(out[key]["probability"],
                               out["index_columns"]["probability"], **TOL)
  np.testing.assert_allclose(out["index_columns"]["probability"], expected,
                             **TOL)
  for key in ("candidates_rows", "candidates_columns", "candidates_grpc"):
    np.testing.assert_allclose(
        out[key]["probabilities"],
        out["index_candidates_grpc"]["probabilities"], **TOL)
  np.testing.assert_allclose(out["index_candidates_grpc"]["probabilities"],
                             expected_cand, **TOL)
  assert np.ptp(expected_cand) > 1e-3
