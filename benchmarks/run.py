"""Speed and memory benchmarks, as ratios against a baseline in the same run.

  python benchmarks/run.py --quick     # reduced sizes, a few minutes
  python benchmarks/run.py             # full set (--output FILE writes it)

Each section runs in its own subprocess, so the peak resident memory (RSS)
reported beside it belongs to that section alone. The last line printed is
one JSON object of the headline ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("din_vs_deepctr", "dien_vs_din", "serving", "vocabulary", "beam",
            "floor")


# --------------------------------------------------------------------------- #
# Shared helpers (run inside the section subprocess).
# --------------------------------------------------------------------------- #
def _tf():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tfrs_din  # noqa: F401  (Keras 2 before TensorFlow)
  import tensorflow as tf
  return tf


def _synthetic(quick: bool, max_history: int = 50):
  from tfrs_din.data.synthetic import SyntheticConfig, generate
  return generate(SyntheticConfig(
      num_users=600 if quick else 2000, min_steps=60, max_steps=120,
      max_history=max_history, embedding_dim=18, seed=0))


def _interleaved_epoch(runs: dict, chunk: int = 10, skip: int = 2) -> dict:
  """Trains compiled Keras models for one epoch each, taking turns.

  Models alternate every `chunk` steps, so that a slow spell of a noisy
  machine falls on all of them alike. Returns each model's step times (the
  first `skip` chunks, tracing and warm-up, left out).

  Args:
    runs: name -> (compiled model, finite dataset of batches).
  """
  state = {}
  for name, (model, dataset) in runs.items():
    steps = sum(1 for _ in dataset) if dataset.cardinality() < 0 else int(
        dataset.cardinality())
    state[name] = dict(fn=model.make_train_function(), it=iter(dataset),
                       left=steps, times=[], chunks=0)
  while any(s["left"] > 0 for s in state.values()):
    for s in state.values():
      for _ in range(min(chunk, s["left"])):
        start = time.perf_counter()
        s["fn"](s["it"])
        if s["chunks"] >= skip:
          s["times"].append(time.perf_counter() - start)
        s["left"] -= 1
      s["chunks"] += 1
  return {name: s["times"] for name, s in state.items()}


def _throughput(times: list, batch: int) -> float:
  """Examples per second from the median step time (robust to hiccups)."""
  import numpy as np
  return batch / float(np.median(times))


DEEPCTR_FEATURES = ["user_id", "item_id", "category_id", "hist_item_id",
                    "hist_category_id", "hist_length"]


def _deepctr_din(tf, spec):
  """DeepCTR's DIN with our benchmark's dimensions (Dice everywhere)."""
  from deepctr.feature_column import SparseFeat, VarLenSparseFeat
  from deepctr.models import DIN
  sizes = {f.name: f.vocab_size for f in spec.user_features + spec.item_features}

  def history(name):
    return VarLenSparseFeat(SparseFeat(f"hist_{name}", sizes[name],
                                       embedding_dim=18, embedding_name=name),
                            maxlen=spec.max_history, length_name="hist_length")

  columns = [SparseFeat(n, sizes[n], embedding_dim=18)
             for n in ("user_id", "item_id", "category_id")]
  columns += [history("item_id"), history("category_id")]
  tf.keras.utils.set_random_seed(0)
  return DIN(columns, ["item_id", "category_id"], dnn_hidden_units=(200, 80),
             dnn_activation="dice", att_hidden_size=(80, 40),
             att_activation="dice", seed=0)


def _training_batches(tf, data, batch: int = 256, peer_features=None):
  """One epoch of training batches in one fixed shuffled order.

  Models compared in a section see the same batches in the same order, so
  that their AUC after one epoch differs by the model, not by the order.
  Returns our dict batches and, with `peer_features`, (x, y) batches for a
  plain Keras model.
  """
  import numpy as np
  train = ~data.arrays["is_test"]
  order = np.random.default_rng(0).permutation(int(train.sum()))
  arrays = {k: tf.constant(v[train][order]) for k, v in data.arrays.items()
            if k != "is_test"}
  index = tf.data.Dataset.range(len(order)).batch(batch)
  ours = index.map(lambda i: {k: tf.gather(v, i) for k, v in arrays.items()})
  if peer_features is None:
    return ours.prefetch(2)
  peer = index.map(lambda i: ({n: tf.gather(arrays[n], i)
                               for n in peer_features},
                              tf.gather(arrays["label"], i)))
  return ours.prefetch(2), peer.prefetch(2)


def _compiled(tf, data, model_cls, **kwargs):
  from tfrs_din.optimizers import LazyAdam
  tf.keras.utils.set_random_seed(0)
  model = model_cls(data.spec, **kwargs)
  model.compile(LazyAdam(1e-3))
  return model


# --------------------------------------------------------------------------- #
# Sections.
# --------------------------------------------------------------------------- #
def din_vs_deepctr(quick: bool) -> dict:
  """Our DINModel vs DeepCTR's DIN: same data, dimensions and batch."""
  tf = _tf()
  import numpy as np
  from tfrs_din.models import DINModel
  data = _synthetic(quick)
  dims = dict(mlp_units=(200, 80), activation="dice", attention_units=(80, 40),
              attention_activation="dice", regularization=None)
  ours = _compiled(tf, data, DINModel, **dims)

  peer = _deepctr_din(tf, data.spec)
  peer.compile(tf.keras.optimizers.Adam(1e-3), "binary_crossentropy",
               metrics=[tf.keras.metrics.AUC(name="auc")])
  names = DEEPCTR_FEATURES
  train, test = ~data.arrays["is_test"], data.arrays["is_test"]
  ours_data, peer_data = _training_batches(tf, data, 256, names)
  times = _interleaved_epoch({"ours": (ours, ours_data),
                              "deepctr": (peer, peer_data)})
  ours_eps = _throughput(times["ours"], 256)
  peer_eps = _throughput(times["deepctr"], 256)
  ours_auc = ours.evaluate(data.dataset("test", 2048), return_dict=True,
                           verbose=0)["auc"]
  peer_auc = peer.evaluate({n: data.arrays[n][test] for n in names},
                           data.arrays["label"][test], batch_size=2048,
                           verbose=0, return_dict=True)["auc"]
  return {"ours_examples_per_s": ours_eps, "deepctr_examples_per_s": peer_eps,
          "din_train_vs_deepctr": ours_eps / peer_eps,
          "ours_auc": ours_auc, "deepctr_auc": peer_auc,
          "train_examples": int(train.sum())}


def dien_vs_din(quick: bool) -> dict:
  """DIEN (AUGRU + auxiliary loss, official sizes) vs our DIN, same data.

  DIEN runs twice: with the fused C++ GRU kernels (the default in `fit`) and
  with TensorFlow's loops (`use_fused_kernels = False`), to show what the
  kernels are worth.
  """
  tf = _tf()
  from tfrs_din.models import DIENModel, DINModel
  data = _synthetic(quick)
  common = dict(mlp_units=(200, 80), activation="dice", regularization=None)
  din = _compiled(tf, data, DINModel, attention_units=(80, 40), **common)
  dien = _compiled(tf, data, DIENModel, gru_units=36, **common)
  dien_loop = _compiled(tf, data, DIENModel, gru_units=36, **common)
  dien_loop.use_fused_kernels = False
  models = {"din": din, "dien": dien, "dien_tf_loop": dien_loop}
  times = _interleaved_epoch({k: (m, _training_batches(tf, data))
                              for k, m in models.items()})
  eps = {k: _throughput(times[k], 256) for k in models}
  auc = {k: m.evaluate(data.dataset("test", 2048), return_dict=True,
                       verbose=0)["auc"] for k, m in models.items()}
  return {"din_examples_per_s": eps["din"], "dien_examples_per_s": eps["dien"],
          "dien_tf_loop_examples_per_s": eps["dien_tf_loop"],
          "dien_vs_din_train": eps["dien"] / eps["din"],
          "dien_tf_loop_vs_din_train": eps["dien_tf_loop"] / eps["din"],
          "din_auc": auc["din"], "dien_auc": auc["dien"],
          "dien_tf_loop_auc": auc["dien_tf_loop"]}


def serving(quick: bool) -> dict:
  """Exported score_candidates (1 user x 500 candidates x history 100) against
  the machine's FLOP floor, and against DeepCTR's DIN scoring the same 500
  tiled rows when DeepCTR is installed (benchmarks/serving.py)."""
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  import serving as serving_bench  # pylint: disable=g-import-not-at-top
  return serving_bench.run(quick, throughput=0 if quick else 20)


def vocabulary(quick: bool) -> dict:
  """Step time with a 10M-row item table vs 10k rows: MBA with LazyAdam,
  the dense L2 with LazyAdam (as `train` runs it) and with Keras' Adam, and
  its lazy form (LazyAdam's rows' L2, one pass
  over the tables every 100 steps: timed as the mean step over 200 steps,
  so that two passes are in it, after a first period that compiles its
  kernel; what one pass costs is the mean's excess over the median step,
  times the period)."""
  tf = _tf()
  import numpy as np
  from tfrs_din.features import CategoricalFeature, FeatureSpec
  from tfrs_din.models import DINModel
  from tfrs_din.optimizers import DEFAULT_ROW_L2_EVERY, LazyAdam
  big = 2_000_000 if quick else 10_000_000
  B, L, steps = 256, 50, (15 if quick else 30)
  rng = np.random.default_rng(0)

  def step_time(vocab, optimizer, regularization, steps=steps, mean=False,
                skip=1):
    spec = FeatureSpec(
        user_features=[CategoricalFeature("user_id", 10_000, 18)],
        item_features=[CategoricalFeature("item_id", vocab, 18,
                                          frequencies=rng.integers(1, 100, vocab)),
                       CategoricalFeature("category_id", 1000, 18)],
        max_history=L)
    tf.keras.utils.set_random_seed(0)
    model = DINModel(spec, mlp_units=(200, 80), attention_units=(80, 40),
                     activation="prelu", attention_activation="prelu",
                     regularization=regularization)
    model.compile(optimizer)
    batch = {"user_id": rng.integers(2, 10_000, B),
             "item_id": rng.integers(2, vocab, B),
             "category_id": rng.integers(2, 1000, B),
             "hist_item_id": rng.integers(2, vocab, (B, L)),
             "hist_category_id": rng.integers(2, 1000, (B, L)),
             "hist_length": rng.integers(1, L + 1, B),
             "label": rng.integers(0, 2, B).astype(np.float32)}
    ds = tf.data.Dataset.from_tensors(batch).repeat(steps + 5 * skip)
    times = _interleaved_epoch({"model": (model, ds)}, chunk=5, skip=skip)
    if mean:  # (mean, median): the mean carries the period passes
      return float(np.mean(times["model"])), float(np.median(times["model"]))
    return float(np.median(times["model"]))

  small = 10_000
  lazy_small = step_time(small, LazyAdam(1e-3), "mba")
  lazy_big = step_time(big, LazyAdam(1e-3), "mba")
  # The dense L2 as `train` runs it (LazyAdam: a table's dense gradient
  # takes one fused XLA update), and under Keras' Adam (unfused on CPU) as
  # the baseline of the same run.
  dense_small = step_time(small, LazyAdam(1e-3), "l2")
  keras_small = step_time(small, tf.keras.optimizers.Adam(1e-3), "l2")
  dense_big = step_time(big, LazyAdam(1e-3), "l2")
  keras_big = step_time(big, tf.keras.optimizers.Adam(1e-3), "l2")
  # Near "auto"'s switch (DENSE_L2_WARN_ROWS: 250k rows in all tables).
  mid = 229_000  # + 10k users + 1k categories = 240k rows
  dense_mid = step_time(mid, LazyAdam(1e-3), "l2")
  keras_mid = step_time(mid, tf.keras.optimizers.Adam(1e-3), "l2")
  period = DEFAULT_ROW_L2_EVERY
  lazy_l2 = dict(steps=2 * period, mean=True, skip=period // 5 + 1)
  (lazy_l2_small, _), (lazy_l2_big, lazy_l2_big_median), (lazy_l2_mid, _) = (
      step_time(rows, LazyAdam(1e-3), "lazy_l2", **lazy_l2)
      for rows in (small, big, mid))
  # What one pass over the 10M-row tables adds to its step: the mean's
  # excess over the median, times the steps per pass.
  lazy_l2_big_pass = (lazy_l2_big - lazy_l2_big_median) * period
  return {"big_vocab": big, "mba_lazy_adam_10k_ms": 1000 * lazy_small,
          "mba_lazy_adam_big_ms": 1000 * lazy_big,
          "l2_10k_ms": 1000 * dense_small, "l2_big_ms": 1000 * dense_big,
          "l2_240k_rows_ms": 1000 * dense_mid,
          "l2_keras_adam_10k_ms": 1000 * keras_small,
          "l2_keras_adam_big_ms": 1000 * keras_big,
          "l2_keras_adam_240k_rows_ms": 1000 * keras_mid,
          "l2_10k_vs_keras_adam": dense_small / keras_small,
          "l2_big_vs_keras_adam": dense_big / keras_big,
          "l2_240k_rows_vs_keras_adam": dense_mid / keras_mid,
          "lazy_l2_10k_mean_ms": 1000 * lazy_l2_small,
          "lazy_l2_240k_rows_mean_ms": 1000 * lazy_l2_mid,
          "lazy_l2_big_mean_ms": 1000 * lazy_l2_big,
          "lazy_l2_big_pass_ms": 1000 * lazy_l2_big_pass,
          "vocab_big_vs_10k_step": lazy_big / lazy_small,
          "l2_big_vs_10k_step": dense_big / dense_small,
          "lazy_l2_big_vs_10k_step": lazy_l2_big / lazy_l2_small,
          "lazy_l2_big_vs_l2_big": lazy_l2_big / dense_big}


def floor(quick: bool) -> dict:
  """DIN and DIEN training and evaluation examples/s as a share of the FLOP
  floor of their matmuls over the history lengths that exist
  (benchmarks/floor.py), and with batches padded to max_history."""
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  import floor as floor_bench  # pylint: disable=g-import-not-at-top
  result = floor_bench.run(seconds=2.0 if quick else 10.0, quick=quick,
                           compare_max_history=True)
  for shape, rate in result.pop("matmul_gflop_per_s").items():
    result[f"matmul_gflop_per_s {shape}"] = rate
  return result


def beam(quick: bool) -> dict:
  """Events per second of the Beam job, in-memory vs multi-processing."""
  import shutil
  import tempfile
  import numpy as np
  sys.path.insert(0, ROOT)
  from beam_jobs import prepare
  from beam_jobs.samples import SampleOptions
  n = 200_000 if quick else 1_000_000
  rng = np.random.default_rng(0)
  tmp = tempfile.mkdtemp()
  path = os.path.join(tmp, "events.csv")
  users = rng.integers(0, n // 50, n)
  items = rng.zipf(1.3, n) % 50_000
  ts = rng.integers(0, 10**8, n)
  with open(path, "w") as f:
    f.write("user_id,item_id,category_id,timestamp\n")
    f.writelines(f"u{u},i{i},c{i % 500},{t}\n" for u, i, t in zip(users, items, ts))
  out = {"events": n}
  for mode, args in (("in_memory", []),
                     ("multi_processing", ["--direct_running_mode=multi_processing",
                                           "--direct_num_workers=2"])):
    config = prepare.PrepareConfig(events=path, output=os.path.join(tmp, mode),
                                   samples=SampleOptions(max_history=50))
    start = time.perf_counter()
    meta = prepare.run(config, args)
    seconds = time.perf_counter() - start
    assert meta["counts"]["events_read"] == n
    out[f"{mode}_events_per_s"] = n / seconds
    out[f"{mode}_seconds"] = seconds
  out["beam_events_per_s"] = max(out["in_memory_events_per_s"],
                                 out["multi_processing_events_per_s"])
  out["multi_vs_in_memory"] = (out["multi_processing_events_per_s"] /
                               out["in_memory_events_per_s"])
  shutil.rmtree(tmp)
  return out


# --------------------------------------------------------------------------- #
# Driver.
# --------------------------------------------------------------------------- #
def _run_section(name: str, quick: bool) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--section", name]
  cmd += ["--quick"] if quick else []
  start = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
  if proc.returncode != 0:
    return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else
            f"exit {proc.returncode}"}
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  result["wall_s"] = time.perf_counter() - start
  return result


TARGETS = (  # (section, figure, target, higher is better)
    ("din_vs_deepctr", "din_train_vs_deepctr", 2.0, True),
    ("dien_vs_din", "dien_vs_din_train", 0.4, True),
    ("serving", "din_serve_vs_floor", 3.0, False),
    ("serving", "dien_serve_vs_floor", 3.0, False),
    ("serving", "serve_vs_deepctr", 3.0, True),
    ("vocabulary", "vocab_big_vs_10k_step", 1.3, False),
    ("vocabulary", "lazy_l2_big_vs_10k_step", 2.0, False),
)


def _markdown(results: dict, quick: bool) -> str:
  lines = ["# Benchmarks", "", "| target | measured | met |", "|---|---|---|"]
  for section, key, target, higher in TARGETS:
    value = results.get(section, {}).get(key)
    if not isinstance(value, (int, float)):   # absent, or why it was skipped
      continue
    met = value >= target if higher else value <= target
    lines.append(f"| {key} {'>=' if higher else '<='} {target} | {value:.3g} | "
                 f"{'yes' if met else 'no'} |")
  lines += ["",
           f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
           f"Python {platform.python_version()}; "
           f"{'reduced (--quick)' if quick else 'full'} sizes. Ratios compare "
           "runs made in the same script run; absolute times are context only. "
           "Peak RSS is the section subprocess's maximum resident memory.", ""]
  for name, values in results.items():
    lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
    for key, value in values.items():
      shown = f"{value:.4g}" if isinstance(value, float) else str(value)
      lines.append(f"| {key} | {shown} |")
    lines.append("")
  return "\n".join(lines)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--section", choices=SECTIONS)
  parser.add_argument("--only", help="comma-separated sections to run")
  parser.add_argument("--output", help="also write the report to this file "
                      "(e.g. a copy of docs/benchmarks.md: the tables above "
                      "its '## Reading the figures' are replaced)")
  args = parser.parse_args()
  if args.section:
    result = globals()[args.section](args.quick)
    result["peak_rss_mb"] = resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    return 0
  sections = args.only.split(",") if args.only else SECTIONS
  results = {}
  for name in sections:
    print(f"[bench] {name} ...", flush=True)
    results[name] = _run_section(name, args.quick)
    print(f"[bench] {name}: {json.dumps(results[name])}", flush=True)
  write_report(results, args.quick, None if args.quick else args.output)
  _print_headline(results, args.quick)
  return 0


READING = "\n## Reading the figures"


def write_report(results: dict, quick: bool, path) -> None:
  """Writes the tables, keeping the hand-written reading of the old report."""
  if not path:
    return
  reading = ""
  if os.path.exists(path):
    with open(path) as f:
      old = f.read()
    if READING in old:
      reading = old[old.index(READING):]
  with open(path, "w") as f:
    f.write(_markdown(results, quick) + reading)


def _print_headline(results: dict, quick: bool) -> None:
  headline = {}
  for key in ("din_train_vs_deepctr", "dien_vs_din_train",
              "din_serve_vs_floor", "dien_serve_vs_floor", "serve_vs_deepctr",
              "vocab_big_vs_10k_step", "beam_events_per_s",
              "din_train_vs_floor", "dien_train_vs_floor"):
    for values in results.values():
      if isinstance(values.get(key), (int, float)):
        headline[key if key != "vocab_big_vs_10k_step" else
                 ("vocab_10m_vs_10k_step" if not quick
                  else "vocab_2m_vs_10k_step")] = round(values[key], 3)
  print(json.dumps(headline))


if __name__ == "__main__":
  sys.exit(main())
