"""Serving latency of exported SavedModels against the machine's FLOP floor.

  python benchmarks/serving.py [--quick] [--reps N] [--throughput ROUNDS]

DIN and DIEN with the papers' sizes (embedding 18 per feature, item = id +
category = 36, attention 80-40, GRU 36, tower 200-80) are exported three
ways: the reference path (`fast_scoring=False`, `model.score_candidates`),
the fast scorer (`tfrs_din.serving.inference`) and the fast scorer compiled
with XLA (`jit_compile=True`). Each export is loaded with
`tf.saved_model.load`, as a server would, and its `score_candidates` (raw
ids) and `score_candidates_indices` are timed on one user x 500 candidates x
a history of 100, the calls taking turns with a 2048^3 float32 matmul whose
FLOP rate gives the floor:

  floor time = multiply-adds of the exact computation * 2 / FLOP rate

(`floor_multiply_adds` spells the count out). Figures are medians; the last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List, Sequence, Tuple

N_CANDIDATES, HISTORY, BATCH_USERS = 500, 100, 64
MATMUL = 2048


def _tf():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tfrs_din  # noqa: F401  (Keras 2 before TensorFlow)
  import tensorflow as tf
  return tf


# --------------------------------------------------------------------------- #
# The floor.
# --------------------------------------------------------------------------- #
def _mlp_macs(widths: Sequence[int]) -> int:
  return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def _din_unit_macs(model, dim: int, candidates: int, history: int
                   ) -> Dict[str, int]:
  """DIN's activation unit (`attention_units`) over D-wide behaviours."""
  units = list(model.attention_units)
  return {"pairs": candidates * history * (dim * units[0]
                                           + _mlp_macs(units + [1])),
          "behaviours": history * dim * units[0],
          "candidates": candidates * dim * units[0]}


def floor_multiply_adds(model, candidates: int, history: int) -> Dict[str, int]:
  """Multiply-adds the exact computation needs, by part (and "total").

  DIN (D: item embedding width, attention H1-H2-...-1, tower input width W):
    per (candidate, behaviour) pair: the q*k term of the first attention
      layer, D*H1, and the layers after it, H1*H2 + ... + H_last*1;
    per behaviour: the k-only part of the first layer, D*H1;
    per candidate: the q-only part, D*H1, and the tower, W*T1 + T1*T2 + T2*1.
  DIEN (G: GRU units):
    per user and step: the extractor GRU, D*3G + G*3G, and the evolution
      GRU's input projection G*3G (shared by the candidates; per candidate
      for AIGRU, whose input depends on the attention);
    per candidate and step: the evolution GRU's recurrent product G*3G and
      the attention: the logit G (bilinear), or for the "mlp" attention
      (net A1-A2-...-1 over [q, h, q - h, q * h]) DIN's pair terms with G
      in place of D;
    per user and step ("mlp"): the h-only part of the net's first layer G*A1;
    per candidate: the attention query D*G (and, "mlp", its q-only part
      G*A1) and the tower;
    with `attention_pooling_in_tower="din"`, DIN's activation unit as above.
  Element-wise work (activations, gates, softmax) and the attention-weighted
  sum of the behaviours (D per pair) are not counted.
  """
  spec = model.spec
  dim = sum(f.embedding_dim for f in spec.item_features)
  tower = model.tower
  tower_widths = ([int(tower._dense[0].kernel.shape[0])]        # pylint: disable=protected-access
                  + list(model.mlp_units) + [1])
  parts = {"tower": candidates * _mlp_macs(tower_widths)}
  if model.__class__.__name__ == "DINModel":
    parts.update(_din_unit_macs(model, dim, candidates, history))
  else:
    g = model.gru_units
    per_step_projection = g * 3 * g
    parts["extractor"] = history * (dim * 3 * g + g * 3 * g)
    parts["evolution_projection"] = history * per_step_projection * (
        candidates if model.gru_type == "AIGRU" else 1)
    parts["evolution"] = candidates * history * g * 3 * g
    if getattr(model, "attention_type", "bilinear") == "mlp":
      units = list(model.attention_units)
      parts["attention"] = (
          candidates * (dim * g + g * units[0]) + history * g * units[0]
          + candidates * history * (g * units[0] + _mlp_macs(units + [1])))
    else:
      parts["attention"] = candidates * (dim * g + history * g)
    if getattr(model, "attention_pooling_in_tower", None) == "din":
      parts.update(_din_unit_macs(model, dim, candidates, history))
  parts["total"] = sum(parts.values())
  return parts


# --------------------------------------------------------------------------- #
# Models, exports and requests.
# --------------------------------------------------------------------------- #
def _spec(tf):
  from tfrs_din.features import CategoricalFeature, FeatureSpec
  del tf
  return FeatureSpec(
      user_features=[CategoricalFeature("user_id", 10_002, 18)],
      item_features=[CategoricalFeature("item_id", 100_002, 18),
                     CategoricalFeature("category_id", 1_002, 18)],
      max_history=HISTORY)


def _models(tf, spec):
  """Paper-sized DIN and DIEN with non-trivial inference statistics."""
  from tfrs_din.models import DIENModel, DINModel
  models = {}
  for name, cls, kw in (("din", DINModel, dict(attention_units=(80, 40))),
                        ("dien", DIENModel, dict(gru_units=36))):
    tf.keras.utils.set_random_seed(0)
    model = cls(spec, mlp_units=(200, 80), **kw)
    model.build_all()
    # Trained-looking Dice statistics (fresh ones are mean 0, variance 1).
    for v in model.variables:
      if "moving_variance" in v.name:
        v.assign(tf.random.uniform(v.shape, 0.5, 2.0, seed=1))
      elif "moving_mean" in v.name or "alpha" in v.name:
        v.assign(tf.random.normal(v.shape, stddev=0.3, seed=2))
    models[name] = model
  return models


def write_prepared(directory: str, spec) -> None:
  """Vocabularies and item table of a `prepare` output for `spec`: raw ids
  u<i>, i<i>, c<i> (index i + 2), item i in category i mod categories."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))
  from beam_jobs.vocabulary import Vocabulary  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(directory, "vocab"), exist_ok=True)
  prefixes = {"user_id": "u", "item_id": "i", "category_id": "c"}
  for f in spec.user_features + spec.item_features:
    ids = [f"{prefixes[f.name]}{i}" for i in range(f.vocab_size - 2)]
    vocab = Vocabulary(f.name, ids, list(range(len(ids), 0, -1)))
    with open(os.path.join(directory, "vocab", f"{f.name}.tsv"), "w") as out:
      out.write(vocab.to_tsv())
  categories = spec.item_features[1].vocab_size - 2
  with open(os.path.join(directory, "item_table.tsv"), "w") as out:
    out.write("item_id\tcategory_id\n")
    out.writelines(f"i{i}\tc{i % categories}\n"
                   for i in range(spec.item_features[0].vocab_size - 2))


def requests(tf, spec, users: int, candidates: int, history: int, seed=0,
             full_histories: bool = True):
  """(raw-id inputs, index inputs) of `score_candidates` for `users` users.

  With `full_histories` every user has `history` behaviours; otherwise the
  lengths are drawn uniformly in [1, history].
  """
  import numpy as np
  rng = np.random.default_rng(seed)
  items = spec.item_features[0].vocab_size - 2
  categories = spec.item_features[1].vocab_size - 2
  user = rng.integers(0, spec.user_features[0].vocab_size - 2, users)
  hist = rng.integers(0, items, (users, history))
  lengths = (np.full(users, history) if full_histories
             else rng.integers(1, history + 1, users))
  cand = rng.integers(0, items, (users, candidates))
  valid = np.arange(history)[None] < lengths[:, None]
  raw = {"user_id": tf.constant(np.char.add("u", user.astype(str))),
         "hist_item_id": tf.constant(np.where(
             valid, np.char.add("i", hist.astype(str)), "")),
         "candidate_item_id": tf.constant(np.char.add("i", cand.astype(str)))}
  index = {"user_id": tf.constant(user + 2),
           "hist_item_id": tf.constant(np.where(valid, hist + 2, 0)),
           "hist_category_id": tf.constant(np.where(
               valid, hist % categories + 2, 0)),
           "hist_length": tf.constant(lengths.astype(np.int64)),
           "candidate_item_id": tf.constant(cand + 2),
           "candidate_category_id": tf.constant(cand % categories + 2)}
  return raw, index


def race(calls: Dict[str, Callable[[], object]], reps: int,
         warmup: int = 2) -> Dict[str, List[float]]:
  """Seconds per call of each named call, the calls taking turns (in a new
  random order each round, so that none always follows the same one)."""
  import random
  order = random.Random(0)
  times = {k: [] for k in calls}
  for _ in range(warmup):
    for call in calls.values():
      call()
  names = list(calls)
  for _ in range(reps):
    order.shuffle(names)
    for name in names:
      start = time.perf_counter()
      calls[name]()
      times[name].append(time.perf_counter() - start)
  return times


def _matmul_call(tf):
  a = tf.random.normal([MATMUL, MATMUL], seed=3)
  b = tf.random.normal([MATMUL, MATMUL], seed=4)
  fn = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
  return lambda: fn(a, b).numpy()


def _signature_call(signature, inputs):
  def call():
    out = signature(**inputs)
    return next(iter(out.values())).numpy()
  return call


def _deepctr_call(tf, spec, index):
  """DeepCTR's DIN (same sizes, untrained: only the time matters) scoring
  the request's candidates as tiled rows, or None without DeepCTR."""
  try:
    import deepctr  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return None
  from run import _deepctr_din  # pylint: disable=g-import-not-at-top
  peer = _deepctr_din(tf, spec)
  num = int(index["candidate_item_id"].shape[1])
  rows = {k: tf.repeat(index[k], num, axis=0)
          for k in ("user_id", "hist_item_id", "hist_category_id",
                    "hist_length")}
  rows["item_id"] = index["candidate_item_id"][0]
  rows["category_id"] = index["candidate_category_id"][0]
  fn = tf.function(lambda features: peer(features, training=False))
  return lambda: fn(rows).numpy()


VARIANTS = {"reference": dict(fast_scoring=False),
            "fast": dict(fast_scoring=True),
            "xla": dict(fast_scoring=True, jit_compile=True)}


def export_all(tf, models, directory: str, data_dir: str
               ) -> Dict[Tuple[str, str], object]:
  """(model, variant) -> the loaded export."""
  from tfrs_din.serving.export import export_saved_model
  loaded = {}
  for name, model in models.items():
    for variant, options in VARIANTS.items():
      path = export_saved_model(model, os.path.join(directory, name, variant),
                                version=1, data_dir=data_dir, **options)
      loaded[name, variant] = tf.saved_model.load(path)
  return loaded


def run(quick: bool = False, reps: int = 0, throughput: int = 20) -> dict:
  """The serving figures (see the module docstring).

  Args:
    quick: fewer repetitions.
    reps: rounds of the 1-user race (default 10, or 30 without `quick`).
    throughput: rounds of the 64-user race (0: not run).
  """
  tf = _tf()
  import numpy as np
  reps = reps or (10 if quick else 30)
  spec = _spec(tf)
  models = _models(tf, spec)
  tmp = tempfile.mkdtemp(prefix="tfrs_din_serving_bench_")
  out: dict = {}
  try:
    data_dir = os.path.join(tmp, "data")
    write_prepared(data_dir, spec)
    loaded = export_all(tf, models, os.path.join(tmp, "export"), data_dir)
    raw, index = requests(tf, spec, 1, N_CANDIDATES, HISTORY)
    # Same probabilities from every export and form.
    for name in models:
      ref = loaded[name, "reference"].signatures["score_candidates_indices"](
          **index)["probabilities"].numpy()
      for variant in VARIANTS:
        for sig, inputs in (("score_candidates", raw),
                            ("score_candidates_indices", index)):
          start = time.perf_counter()
          got = loaded[name, variant].signatures[sig](**inputs)
          if sig == "score_candidates":   # XLA compiles on the first call
            out[f"{name}_{variant}_first_call_s"] = time.perf_counter() - start
          np.testing.assert_allclose(got["probabilities"].numpy(), ref,
                                     rtol=1e-4, atol=1e-5)
    calls = {"matmul": _matmul_call(tf)}
    for (name, variant), module in loaded.items():
      calls[f"{name}_{variant}"] = _signature_call(
          module.signatures["score_candidates"], raw)
      calls[f"{name}_{variant}_indices"] = _signature_call(
          module.signatures["score_candidates_indices"], index)
    peer = _deepctr_call(tf, spec, index)
    if peer is not None:
      calls["deepctr_din_tiled"] = peer
    times = race(calls, reps)
    median = {k: float(np.median(v)) for k, v in times.items()}
    rate = 2 * MATMUL ** 3 / median["matmul"]
    best_rate = 2 * MATMUL ** 3 / min(times["matmul"])
    out["matmul_gflop_per_s"] = rate / 1e9
    out["matmul_best_gflop_per_s"] = best_rate / 1e9
    for name, model in models.items():
      macs = floor_multiply_adds(model, N_CANDIDATES, HISTORY)
      floor = 2 * macs["total"] / rate
      out[f"{name}_floor_mmacs"] = macs["total"] / 1e6
      out[f"{name}_floor_ms"] = 1000 * floor
      for variant in VARIANTS:
        for suffix in ("", "_indices"):
          key = f"{name}_{variant}{suffix}"
          out[f"{key}_ms"] = 1000 * median[key]
          out[f"{key}_vs_floor"] = median[key] / floor
      best = min(median[f"{name}_{v}"] for v in VARIANTS)
      out[f"{name}_serve_vs_floor"] = best / floor
      # A loaded machine slows the long two-thread matmul most: the floor at
      # its fastest repetition is the stricter figure.
      out[f"{name}_serve_vs_floor_at_best_rate"] = best / (
          2 * macs["total"] / best_rate)
      out[f"{name}_fast_vs_reference"] = (median[f"{name}_reference"]
                                          / median[f"{name}_fast"])
      out[f"{name}_xla_vs_reference"] = (median[f"{name}_reference"]
                                         / median[f"{name}_xla"])
    if peer is not None:
      out["deepctr_din_tiled_ms"] = 1000 * median["deepctr_din_tiled"]
      out["serve_vs_deepctr"] = median["deepctr_din_tiled"] / min(
          median[f"din_{v}"] for v in VARIANTS)
    else:
      out["serve_vs_deepctr"] = "skipped: deepctr is not installed"
    if throughput:
      out.update(batch_throughput(tf, spec, loaded, throughput))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out


def batch_throughput(tf, spec, loaded, reps: int) -> dict:
  """64 users x 500 candidates per call (histories of 1-100 behaviours):
  candidates per second and p50/p99 latency of the raw-id signature over
  `reps` calls of each export."""
  import numpy as np
  raw, _ = requests(tf, spec, BATCH_USERS, N_CANDIDATES, HISTORY, seed=1,
                    full_histories=False)
  calls = {f"{name}_{variant}": _signature_call(
      module.signatures["score_candidates"], raw)
           for (name, variant), module in loaded.items()}
  times = race(calls, reps, warmup=1)
  out = {}
  for key, spent in times.items():
    spent = np.asarray(spent)
    out[f"batch64_{key}_candidates_per_s"] = (
        BATCH_USERS * N_CANDIDATES / float(np.median(spent)))
    out[f"batch64_{key}_p50_ms"] = 1000 * float(np.percentile(spent, 50))
    out[f"batch64_{key}_p99_ms"] = 1000 * float(np.percentile(spent, 99))
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--reps", type=int, default=0)
  parser.add_argument("--throughput", type=int, default=20,
                      help="rounds of the 64-user race (0: skip it)")
  args = parser.parse_args()
  result = run(args.quick, args.reps, args.throughput)
  result["peak_rss_mb"] = resource.getrusage(
      resource.RUSAGE_SELF).ru_maxrss / 1024
  for key, value in result.items():
    print(f"{key:48s} {value:.4g}" if isinstance(value, float)
          else f"{key:48s} {value}")
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
