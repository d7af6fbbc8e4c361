"""Training and evaluation throughput of DIN and DIEN against a FLOP floor.

  python benchmarks/floor.py [--data DIR] [--seconds N] [--output FILE]

The floor is what the models' matrix products alone would cost on this
machine, over the history lengths that exist:

  floor examples/s = 1 / sum_m (FLOPs of matmul m per example / rate of m)

* FLOPs per example (`matmuls`): every matrix product of the model at its
  default sizes (the shipped model: `DINModel(spec)`, `DIENModel(spec)`),
  each counted per example, per behaviour or per auxiliary step, averaged
  over the history-length distribution: read from `--data`'s train split (a
  `tfrs-din prepare` output), else from the synthetic generator. Only the
  valid behaviours count: padding is not work a model needs. Training counts
  3x the forward products (the backward pass has two products per forward
  one) and DIEN's auxiliary net; evaluation counts the forward pass.
  Element-wise work (activations, gates, softmax), embedding lookups and the
  optimizer are not counted, so a model cannot reach its floor.
* Rates (`matmul_rates`): GFLOP/s of float32 `tf.matmul` at each product's
  own shape for a batch of `--batch_size` examples (e.g. [B * mean length,
  36] x [36, 80] for DIN's per-behaviour products, [B, 36] x [36, 108] for a
  GRU step, [256, 200] x [200, 80] for the tower), run in a loop inside one
  graph, so no per-call overhead counts.

* Peak (`peak_matmul_gflop_per_s`): the rate of one 2048^3 product, the
  best this machine does; `*_vs_peak_floor` is the same ratio against the
  floor at that rate for every product (small products cannot reach it,
  so this floor is stricter).

Then each model trains (`make_train_function`, the pipeline `train` uses:
`make_dataset` with length-grouped, bucket-padded batches) and evaluates
(`make_test_function` on the test split) for `--seconds` each, and the
figures are the measured examples/s and their ratio to the floor (1 would
be a model doing nothing but its matmuls at the measured rates). With
`--compare_max_history` the models also run on batches padded to
max_history (the old pipeline), in the same run.

The last line printed is one JSON object (also written to `--output`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tf():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.path.insert(0, ROOT)
  import tfrs_din  # noqa: F401  (Keras 2 before TensorFlow)
  import tensorflow as tf
  return tf


# --------------------------------------------------------------------------- #
# FLOPs per example.
# --------------------------------------------------------------------------- #
class Matmul(NamedTuple):
  """One matrix product of a model: [rows, k] x [k, n], `rows` per
  `per` ("example", "behaviour": one per valid behaviour, "step": one per
  recurrent step, a behaviour too but run step by step, [B_t, k] x [k, n];
  "aux_pair": two per auxiliary step, a behaviour followed by a valid one)."""
  name: str
  per: str
  k: int
  n: int
  training_only: bool = False


def _mlp(name: str, per: str, widths: List[int], training_only=False
         ) -> List[Matmul]:
  return [Matmul(f"{name}_{i}", per, a, b, training_only)
          for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))]


def _tower_input_width(model) -> int:
  kernels = [w for w in model.tower.trainable_weights if w.shape.rank == 2]
  return int(kernels[0].shape[0])


def _din_unit(name: str, model, dim: int) -> List[Matmul]:
  """DIN's activation unit (`attention_units`) over D-wide behaviours: the
  query part per example, the key and q*k parts and the layers after them
  per behaviour."""
  units = list(model.attention_units)
  return ([Matmul(f"{name}_query", "example", dim, units[0]),
           Matmul(f"{name}_key", "behaviour", dim, units[0]),
           Matmul(f"{name}_product", "behaviour", dim, units[0])]
          + _mlp(name, "behaviour", units + [1]))


def matmuls(model) -> List[Matmul]:
  """The matrix products of a built DIN or DIEN (N = 1 candidate).

  DIN (D: item embedding width, attention H1-H2-...): per behaviour the key
  and q*k parts of the first attention layer (D x H1 each, the split form of
  `LocalActivationUnit`) and the layers after it; per example the query part
  (D x H1) and the tower. DIEN (G: GRU units): per
  behaviour the extractor's input projection (D x 3G) and, step by step,
  its recurrent product (G x 3G); the attention ("mlp": the query D x G per
  example, then the activation unit on the states; "bilinear": D x G per
  example and G per behaviour); the evolution GRU's input projection and
  recurrent product; the tower; with `attention_pooling_in_tower="din"`
  DIN's activation unit as above; in training, the auxiliary net on two
  [h_t ; e] pairs per step with a valid next behaviour.
  """
  spec = model.spec
  dim = sum(f.embedding_dim for f in spec.item_features)
  tower = [_tower_input_width(model)] + list(model.mlp_units) + [1]
  out = _mlp("tower", "example", tower)
  kind = type(model).__name__
  if kind == "DINModel":
    out += _din_unit("attention", model, dim)
  elif kind == "DIENModel":
    g = model.gru_units
    out += [Matmul("extractor_input", "behaviour", dim, 3 * g),
            Matmul("extractor_recurrent", "step", g, 3 * g),
            Matmul("evolution_input", "behaviour", g, 3 * g),
            Matmul("evolution_recurrent", "step", g, 3 * g)]
    if model.attention_type == "mlp":
      units = list(model.attention_units)
      out += [Matmul("attention_query", "example", dim, g),
              Matmul("attention_unit_query", "example", g, units[0]),
              Matmul("attention_key", "behaviour", g, units[0]),
              Matmul("attention_product", "behaviour", g, units[0])]
      out += _mlp("attention", "behaviour", units + [1])
    else:
      out += [Matmul("attention_query", "example", dim, g),
              Matmul("attention_logit", "behaviour", g, 1)]
    if model.attention_pooling_in_tower == "din":
      out += _din_unit("behaviour_attention", model, dim)
    if model.aux_loss_weight > 0:
      out += _mlp("aux", "aux_pair", [g + dim] + list(model.aux_hidden_units)
                  + [1], training_only=True)
  else:
    raise ValueError(f"no FLOP count for {kind}")
  return out


def rows_per_example(per: str, lengths) -> float:
  """Mean rows a product has per example over the history `lengths`."""
  import numpy as np
  lengths = np.asarray(lengths, np.float64)
  return {"example": 1.0, "behaviour": lengths.mean(),
          "step": lengths.mean(),
          "aux_pair": 2 * np.maximum(lengths - 1, 0).mean()}[per]


def flops_per_example(products: List[Matmul], lengths, training: bool
                      ) -> Dict[str, float]:
  """FLOPs of each product per example (x3 in training), and "total"."""
  out = {}
  for m in products:
    if m.training_only and not training:
      continue
    out[m.name] = (2 * rows_per_example(m.per, lengths) * m.k * m.n
                   * (3 if training else 1))
  out["total"] = sum(out.values())
  return out


# --------------------------------------------------------------------------- #
# Matmul rates.
# --------------------------------------------------------------------------- #
def _shape(m: Matmul, lengths, batch: int):
  """[rows, k] x [k, n] of one batch's product (a step: a batch of rows)."""
  if m.per in ("example", "step"):
    rows = batch
  else:
    rows = batch * rows_per_example(m.per, lengths)
  return max(1, int(round(rows))), m.k, m.n


# Side of the square product whose rate is the machine's peak.
PEAK_SIZE = 2048


def matmul_rate(tf, rows: int, k: int, n: int, seconds: float) -> float:
  """FLOP/s of [rows, k] x [k, n] float32 products, the best of repeated
  timed loops (each ~10 ms of products run in one graph, on distinct
  inputs so that none is hoisted out of the loop)."""
  flops = 2.0 * rows * k * n
  reps = int(max(1, min(10_000, 2e7 / flops)))
  slabs = 4
  a = tf.random.normal([slabs, rows, k], seed=1)
  b = tf.random.normal([k, n], seed=2)

  @tf.function
  def run(a, b):
    def body(i, total):
      return i + 1, total + tf.reduce_sum(tf.matmul(a[i % slabs], b))
    return tf.while_loop(lambda i, _: i < reps, body,
                         (tf.constant(0), tf.constant(0.0)))[1]

  run(a, b).numpy()                                   # trace and warm up
  best, start = float("inf"), time.perf_counter()
  while time.perf_counter() - start < seconds or best == float("inf"):
    t = time.perf_counter()
    run(a, b).numpy()
    best = min(best, time.perf_counter() - t)
  return flops * reps / best


def floor_examples_per_s(products: List[Matmul], lengths, rates: dict,
                         batch: int, training: bool) -> float:
  """1 / sum_m FLOPs_m per example / rate of m's shape."""
  seconds = 0.0
  for m in products:
    if m.training_only and not training:
      continue
    flops = (2 * rows_per_example(m.per, lengths) * m.k * m.n
             * (3 if training else 1))
    seconds += flops / rates[_shape(m, lengths, batch)]
  return 1.0 / seconds


# --------------------------------------------------------------------------- #
# Data and measured throughput.
# --------------------------------------------------------------------------- #
def _synthetic_data(directory: str, quick: bool):
  """The synthetic log of benchmarks/run.py written as prepared records;
  returns its spec."""
  from tfrs_din.data.synthetic import SyntheticConfig, generate
  data = generate(SyntheticConfig(
      num_users=600 if quick else 2000, min_steps=60, max_steps=120,
      max_history=50, embedding_dim=18, seed=0))
  data.write_records(directory, shards=4)
  return data.spec, True


def _prepared_data(directory: str):
  from tfrs_din.data.pipeline import load_feature_spec
  spec, metadata = load_feature_spec(directory)
  return spec, bool(metadata.get("has_aux_negatives"))


def history_lengths(tf, directory: str, spec):
  """Every training record's history length (<= max_history)."""
  import numpy as np
  from tfrs_din.data.pipeline import make_dataset
  from tfrs_din.features import HISTORY_LENGTH
  ds = make_dataset(directory, "train", spec, 4096, with_negatives=False)
  return np.concatenate([b[HISTORY_LENGTH].numpy() for b in ds])


def _dataset(directory, split, spec, batch, negatives, padding, training):
  from tfrs_din.data.pipeline import make_dataset
  options = {} if padding == "bucket" else dict(bucket_boundaries=None)
  fresh = None
  if training and negatives == "fresh":
    from tfrs_din.data.negatives import FreshNegatives
    fresh = FreshNegatives.from_prepared(directory, spec)
  return make_dataset(directory, split, spec, batch, shuffle=training,
                      repeat=True, seed=0,
                      with_negatives=training and negatives == "prepared",
                      fresh_negatives=fresh, **options)


def examples_per_s(step, iterator, batch: int, seconds: float,
                   warmup: int = 3) -> float:
  """Examples per second of `step(iterator)` calls over `seconds` (after
  `warmup` calls: tracing)."""
  for _ in range(warmup):
    step(iterator)
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds or steps < 3:
    step(iterator)
    steps += 1
  return steps * batch / (time.perf_counter() - start)


def _model(tf, name, spec):
  from tfrs_din.models import DIENModel, DINModel
  from tfrs_din.optimizers import LazyAdam
  tf.keras.utils.set_random_seed(0)
  model = {"din": DINModel, "dien": DIENModel}[name](spec)
  model.compile(LazyAdam(1e-3))
  return model


def run(data: Optional[str] = None, seconds: float = 5.0, batch: int = 256,
        eval_batch: int = 1024, quick: bool = False,
        compare_max_history: bool = False) -> dict:
  """The figures of the module docstring, as a dict."""
  tf = _tf()
  import numpy as np
  tmp = None
  try:
    if data:
      directory = data
      spec, has_negatives = _prepared_data(data)
      negatives = "prepared" if has_negatives else "fresh"
    else:
      tmp = tempfile.mkdtemp(prefix="tfrs_din_floor_")
      directory = tmp
      spec, _ = _synthetic_data(tmp, quick)
      negatives = "prepared"
    lengths = history_lengths(tf, directory, spec)
    out = {"data": data or "synthetic", "max_history": spec.max_history,
           "train_records": int(len(lengths)),
           "history_mean": float(lengths.mean()),
           "history_p50": float(np.percentile(lengths, 50)),
           "history_p90": float(np.percentile(lengths, 90)),
           "valid_share_at_max_history": float(lengths.mean()
                                               / spec.max_history),
           "batch_size": batch, "eval_batch_size": eval_batch,
           "seconds_per_measurement": seconds}
    models = {name: _model(tf, name, spec) for name in ("din", "dien")}
    # Every variable exists (the tower's input width is read from it).
    for model in models.values():
      model.build_all()
    products = {name: matmuls(m) for name, m in models.items()}
    shapes = sorted({_shape(m, lengths, b) for ms in products.values()
                     for m in ms for b in (batch, eval_batch)})
    rates = {s: matmul_rate(tf, *s, seconds=max(0.2, seconds / 10))
             for s in shapes}
    out["matmul_gflop_per_s"] = {f"[{r},{k}]x[{k},{n}]": rates[r, k, n] / 1e9
                                 for r, k, n in shapes}
    # The machine's best rate, one large square product: the floor no
    # product shape of these models can beat.
    peak = matmul_rate(tf, PEAK_SIZE, PEAK_SIZE, PEAK_SIZE,
                       seconds=max(0.5, seconds / 5))
    out["peak_matmul_gflop_per_s"] = peak / 1e9
    paddings = ["bucket"] + (["max_history"] if compare_max_history else [])
    for name, model in models.items():
      for training, split, size in ((True, "train", batch),
                                    (False, "test", eval_batch)):
        mode = "train" if training else "eval"
        flops = flops_per_example(products[name], lengths, training)
        floor = floor_examples_per_s(products[name], lengths, rates, size,
                                     training)
        out[f"{name}_{mode}_mflop_per_example"] = flops["total"] / 1e6
        out[f"{name}_{mode}_floor_examples_per_s"] = floor
        step = (model.make_train_function() if training
                else model.make_test_function())
        for padding in paddings:
          ds = _dataset(directory, split, spec, size, negatives, padding,
                        training)
          eps = examples_per_s(step, iter(ds), size, seconds)
          suffix = "" if padding == "bucket" else "_max_history_padding"
          out[f"{name}_{mode}_examples_per_s{suffix}"] = eps
          out[f"{name}_{mode}_vs_floor{suffix}"] = eps / floor
          out[f"{name}_{mode}_vs_peak_floor{suffix}"] = (
              eps * flops["total"] / peak)
    out["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                      f"TensorFlow {tf.__version__}")
    return out
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", help="a `tfrs-din prepare` output directory "
                      "(default: the synthetic generator's log)")
  parser.add_argument("--seconds", type=float, default=5.0,
                      help="seconds per throughput measurement (the matmul "
                      "rates take a tenth of it each)")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--eval_batch_size", type=int, default=1024)
  parser.add_argument("--quick", action="store_true",
                      help="a smaller synthetic log")
  parser.add_argument("--compare_max_history", action="store_true",
                      help="also time batches padded to max_history")
  parser.add_argument("--output", help="also write the JSON here")
  args = parser.parse_args()
  if args.seconds <= 0:
    parser.error(f"--seconds must be > 0, got {args.seconds}")
  result = run(args.data, args.seconds, args.batch_size, args.eval_batch_size,
               args.quick, args.compare_max_history)
  line = json.dumps(result)
  if args.output:
    with open(args.output, "w") as f:
      f.write(line + "\n")
  print(line)
  return 0


if __name__ == "__main__":
  sys.exit(main())
