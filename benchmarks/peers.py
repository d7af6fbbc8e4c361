"""Our DIN/DIEN against FuxiCTR, DeepCTR-Torch and RecBole on the same data.

    pip install -e ".[peers]"        # a venv of its own: torch is several GB
    # RecBole 1.2.1 pins ray<=2.6.3 (FuxiCTR 2.3.10 needs ray>=2.52, used by
    # neither here) and its Config needs NumPy 1:
    pip install --no-deps recbole==1.2.1
    pip install "numpy<2" "pandas<3" "pyarrow<22" colorlog==4.7.2 \
        colorama==0.4.4 tensorboard thop tabulate plotly texttable psutil
    python benchmarks/peers.py --quick                    # smoke run, minutes
    python benchmarks/peers.py                            # 5 seeds; --docs FILE
                                                          # also rewrites its
                                                          # section of FILE
    python benchmarks/peers.py --schedule validated --libraries ours,fuxictr

One data set is generated once (`tfrs_din.data.synthetic`, a planted
"candidate category vs recent behaviours" signal) and exported to NumPy:
user id, item id, category, history item ids and categories (oldest first,
padded after the history with 0), history length, label, and DIEN's
auxiliary negative sequences, drawn once uniformly from the items outside
the row's own history. The training rows are put in one fixed order; every
library reads them in that order, batch 256, one epoch.

`--schedule validated` trains every library as a user would before
shipping it: up to `--max-epochs` epochs, the epoch chosen on held-out
training users (the same users, and the same order of the rows in every
epoch, for every library), the test split scored with the model of the best
validation epoch. `--prepared DIR` runs either schedule on a `tfrs-din
prepare` output (e.g. Amazon Toys) instead of the generator. Each data set
and schedule has a docs section of its own.

Every (library, model, seed) trains in its own subprocess, so its peak RSS
is its own; peers are imported only there (our default install and test
suite never need them). Each subprocess checks the SHA-256 of the arrays it
loaded against the export's manifest and counts the examples its training
loop and its test pass saw. Every finished run is appended to `--out`
(JSONL); running the command again skips the runs already there.

Measured per run: test AUC and log loss, train examples/s (batch size over
the median step time, the first steps left out), serving latency p50/p99
for 1 user x 500 candidates with a history of 100 (our `score_candidates`;
the peers have no per-user call, so they score 500 tiled rows, and ours is
also timed that way), peak RSS, trainable parameters.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARIES = ("ours", "fuxictr", "deepctr_torch", "recbole")
# `--libraries ours:NAME`: ours with these options changed (model
# constructor arguments, or `TrainConfig` fields such as "optimizer"), to
# find which of our defaults differ in effect from a peer's.
OURS_VARIANTS = {
    "no_l2": {"regularization": None},  # no embedding penalty, as the peers
    "no_behaviour_sum": {"behaviour_sum_in_tower": False},
    "embeddings_1e-4": {"embeddings_initializer": {
        "class_name": "RandomNormal", "config": {"stddev": 1e-4}}},
    "dense_adam": {"optimizer": "adam"},  # every embedding row, every step
    "no_aux": {"aux_loss_weight": 0.0},  # DIEN as FuxiCTR's trains it
    "bilinear": {"attention_type": "bilinear"},  # FuxiCTR's DIEN attention
    "no_tower_norm": {"tower_input_normalization": None},
    # DIN options of the official code (zhougr1993/DeepInterestNetwork
    # din/model.py: sigmoid scoring net, softmax over the history).
    "softmax_attention": {"attention_normalization": "softmax"},
    "sigmoid_attention": {"attention_activation": "sigmoid"},
    "tower_batch_norm": {"tower_input_normalization": "batch"},
    "tower_affine": {"tower_input_normalization": "affine"},
    "behaviour_sum": {"tower_behaviour_pooling": "sum"},  # the official code's
    # The DIN paper's MBA, lambda 0.01, n_j the id counts the data set
    # carries (the generator's, or the prepared vocabulary's).
    "mba": {"regularization": "mba"},
}
# Every choice of FuxiCTR 2.3.10's DIEN that ours has as an option (its
# model_zoo/LongCTR/DIEN and BaseModel, read from the wheel, as run here):
# the paper's AUGRU, bilinear attention, no auxiliary loss, the behaviour
# sum (`enable_sum_pooling`), no attention-pooled behaviours, no
# normalisation of the tower input, N(0, 1e-4) embeddings, no embedding
# penalty, Adam on every row.
OURS_VARIANTS["fuxictr_dien"] = {
    **OURS_VARIANTS["bilinear"], **OURS_VARIANTS["no_aux"],
    **OURS_VARIANTS["no_tower_norm"], **OURS_VARIANTS["embeddings_1e-4"],
    **OURS_VARIANTS["no_l2"], **OURS_VARIANTS["behaviour_sum"],
    "gru_type": "AUGRU", "attention_pooling_in_tower": None,
    "adam_epsilon": 1e-8, "optimizer": "adam"}
# FuxiCTR's DIN choices that ours has as options.
OURS_VARIANTS["fuxictr_din"] = {
    **OURS_VARIANTS["no_behaviour_sum"], **OURS_VARIANTS["embeddings_1e-4"],
    **OURS_VARIANTS["no_l2"], "adam_epsilon": 1e-8, "optimizer": "adam"}
# L2 on every row of every table at each step, FuxiCTR's
# embedding_regularizer (l2_1e-3 is what the default, "auto", gives tables
# of these sizes).
OURS_VARIANTS.update({f"l2_{v}": {"regularization": "l2", "l2": float(v)}
                      for v in ("1e-4", "1e-3")})
# `--libraries fuxictr:NAME`: FuxiCTR with these constructor arguments
# changed. embedding_regularizer=lambda adds lambda / 2 * ||W||^2 of every
# embedding table to each step's loss (its BaseModel.regularization_loss).
FUXICTR_VARIANTS = {f"embedding_l2_{v}": {"embedding_regularizer": float(v)}
                    for v in ("1e-6", "1e-5", "1e-4", "1e-3", "1e-2")}
MODELS = ("din", "dien")
SCHEDULES = ("one_epoch", "validated")
# `--schedule validated`: the users held out to choose the epoch, and how
# many epochs without a better validation AUC end the training.
VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 17
PATIENCE = 2  # FuxiCTR's default (`early_stop_patience`); ours is 1
BATCH = 256
EMBEDDING = 18
MAX_HISTORY = 50
SERVE_HISTORY = 100
SERVE_CANDIDATES = 500
# Every array of the export, in the order they are hashed.
COLUMNS = ("user_id", "item_id", "category_id", "hist_item_id",
           "hist_category_id", "hist_length", "neg_hist_item_id",
           "neg_hist_category_id", "label")
LATENCY_ONLY = False  # set in a --latency-only child
SECTION_BEGIN = "<!-- peers.py: begin (generated, rewritten by benchmarks/peers.py) -->"
SECTION_END = "<!-- peers.py: end -->"


# --------------------------------------------------------------------------- #
# Data: generated once, exported to NumPy (runs with TensorFlow available).
# --------------------------------------------------------------------------- #
def _sizes(quick: bool) -> dict:
  # ~88 samples per user; 9% of users form the test split: about
  # 200k/20k (full) and 20k/2k (quick) examples.
  return dict(num_users=250 if quick else 2500, min_steps=60, max_steps=120,
              max_history=MAX_HISTORY, embedding_dim=EMBEDDING,
              test_fraction=0.09, seed=0)


def _item_categories(cfg) -> np.ndarray:
  """The generator's item -> category table (its first draw, see
  `tfrs_din.data.synthetic.generate`); checked against the samples."""
  rng = np.random.default_rng(cfg.seed)
  item_category = rng.integers(cfg.num_categories, size=cfg.num_items)
  item_category[:cfg.num_categories] = np.arange(cfg.num_categories)
  return item_category


def _negatives(hist: np.ndarray, length: np.ndarray, first_id: int,
               vocab: int, seed: int) -> np.ndarray:
  """One uniform item per valid history position, never one of the row's
  own history items; 0 at padding."""
  rng = np.random.default_rng(seed)
  valid = np.arange(hist.shape[1])[None, :] < length[:, None]
  out = np.zeros_like(hist)
  for start in range(0, len(hist), 8192):
    rows = slice(start, start + 8192)
    h, v = hist[rows], valid[rows]
    neg = rng.integers(first_id, vocab, size=h.shape)
    while True:
      clash = ((neg[:, :, None] == h[:, None, :]) & v[:, None, :]).any(-1) & v
      if not clash.any():
        break
      neg[clash] = rng.integers(first_id, vocab, size=int(clash.sum()))
    out[rows] = np.where(v, neg, 0)
  return out


def export_data(path: str, quick: bool) -> dict:
  """Generates the samples and writes `path` (.npz) and its manifest."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tfrs_din  # noqa: F401  (Keras 2 before TensorFlow)
  from tfrs_din.data.synthetic import FIRST_ID, SyntheticConfig, generate
  cfg = SyntheticConfig(**_sizes(quick))
  data = generate(cfg)
  a = data.arrays
  item_category = _item_categories(cfg)
  # The table must be the generator's: check every (item, category) seen.
  seen = np.concatenate([a["item_id"], a["hist_item_id"][a["hist_item_id"] > 0]])
  cats = np.concatenate([a["category_id"],
                         a["hist_category_id"][a["hist_item_id"] > 0]])
  assert np.array_equal(item_category[seen - FIRST_ID] + FIRST_ID, cats)
  vocab = {f.name: f.vocab_size
           for f in data.spec.user_features + data.spec.item_features}
  neg = _negatives(a["hist_item_id"], a["hist_length"], FIRST_ID,
                   vocab["item_id"], seed=1)
  a = dict(a, neg_hist_item_id=neg,
           neg_hist_category_id=np.where(
               neg > 0, item_category[np.maximum(neg - FIRST_ID, 0)] + FIRST_ID,
               0))
  # One fixed order of the training rows for every library, whole batches
  # only (so no library meets a batch of one in its batch statistics).
  train = np.flatnonzero(~a["is_test"])
  train = train[np.random.default_rng(0).permutation(len(train))]
  train = train[:len(train) // BATCH * BATCH]
  test = np.flatnonzero(a["is_test"])
  out = {}
  for split, rows in (("train", train), ("test", test)):
    for name in COLUMNS:
      out[f"{split}_{name}"] = np.ascontiguousarray(a[name][rows])
  # The serving request: one user, a history of 100, 500 candidates.
  rng = np.random.default_rng(2)
  items = rng.integers(FIRST_ID, vocab["item_id"], SERVE_HISTORY + SERVE_CANDIDATES)
  cats_of = item_category[items - FIRST_ID] + FIRST_ID
  # MBA's n_j as `tfrs-din prepare` counts them (its vocabularies): the
  # events of the log holding id j (the spec's own counts are occurrences in
  # samples, histories included: for items about 15x larger, a weaker
  # penalty).
  frequencies = {
      name: np.bincount([int(e[name][1:]) + FIRST_ID for e in data.events],
                        minlength=size).tolist()
      for name, size in vocab.items()}
  return _write_export(path, out, FIRST_ID + 7, items, cats_of, vocab,
                       generator=_sizes(quick), quick=quick,
                       frequencies=frequencies)


def _write_export(path: str, out: dict, user: int, items: np.ndarray,
                  categories: np.ndarray, vocab: dict, **about) -> dict:
  """Adds the serving request (`user`, the first SERVE_HISTORY of `items` /
  `categories` as behaviours, the rest as candidates) to the train/test
  arrays `out`, writes `path` and its manifest (with `about` in it: the
  id counts of each feature, `frequencies`, are the n_j of our MBA, as
  `tfrs-din train` reads them from the data set)."""
  out = dict(out, serve_user_id=np.array([user]),
             serve_hist_item_id=items[None, :SERVE_HISTORY],
             serve_hist_category_id=categories[None, :SERVE_HISTORY],
             serve_hist_length=np.array([SERVE_HISTORY]),
             serve_item_id=items[None, SERVE_HISTORY:],
             serve_category_id=categories[None, SERVE_HISTORY:])
  np.savez(path, **out)
  manifest = {"sha256": _hash(out), "n_train": len(out["train_label"]),
              "n_test": len(out["test_label"]), "vocab": vocab, **about,
              "train_click_rate": float(out["train_label"].mean()),
              "mean_history": float(out["train_hist_length"].mean()),
              "max_history": int(out["train_hist_length"].max())}
  with open(path + ".json", "w") as f:
    json.dump(manifest, f, indent=1)
  return manifest


def export_prepared(path: str, directory: str) -> dict:
  """Writes `path` (.npz) and its manifest from a `tfrs-din prepare` output
  (a real log, e.g. Amazon Toys `next_item`) instead of the generator: the
  same columns, its own train/test splits, the Beam-drawn auxiliary
  negatives, one fixed order of the training rows.

  Args:
    path: the .npz to write.
    directory: the prepared data set (user_id, item_id and category_id
      features, histories of at most 50, auxiliary negatives).
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tfrs_din  # noqa: F401  (Keras 2 before TensorFlow)
  import tensorflow as tf
  with open(os.path.join(directory, "metadata.json")) as f:
    metadata = json.load(f)
  spec = metadata["feature_spec"]
  names = [g["name"] for g in spec["user_features"] + spec["item_features"]]
  if sorted(names) != ["category_id", "item_id", "user_id"]:
    raise ValueError(f"{directory}: features {names}; the peers' models take "
                     "user_id, item_id and category_id")
  if spec["max_history"] > MAX_HISTORY or not metadata.get("has_aux_negatives"):
    raise ValueError(f"{directory}: needs histories of at most {MAX_HISTORY} "
                     "and auxiliary negatives")
  vocab = {g["name"]: g["vocab_size"]
           for g in spec["user_features"] + spec["item_features"]}
  features = {n: tf.io.FixedLenFeature([], tf.int64) for n in names}
  features["label"] = tf.io.FixedLenFeature([], tf.float32)
  for prefix in ("hist_", "neg_hist_"):
    for n in ("item_id", "category_id"):
      features[prefix + n] = tf.io.VarLenFeature(tf.int64)

  def read(split: str) -> dict:
    files = sorted(tf.io.gfile.glob(os.path.join(directory, split, "*.tfrecord.gz")))
    columns = collections.defaultdict(list)
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8192):
      parsed = tf.io.parse_example(batch, features)
      for name, value in parsed.items():
        if isinstance(value, tf.sparse.SparseTensor):
          value = tf.sparse.to_dense(tf.sparse.reset_shape(
              value, [value.dense_shape[0], MAX_HISTORY]))
        columns[name].append(value.numpy())
    out = {n: np.concatenate(v) for n, v in columns.items()}
    out["hist_length"] = (out["hist_item_id"] > 0).sum(1)
    # As the generator's export: int64 ids, float32 labels.
    return {n: out[n].astype(np.float32 if n == "label" else np.int64)
            for n in COLUMNS}

  train, test = read("train"), read("test")
  order = np.random.default_rng(0).permutation(len(train["label"]))
  order = order[:len(order) // BATCH * BATCH]
  out = {}
  for split, arrays, rows in (("train", train, order),
                              ("test", test, np.arange(len(test["label"])))):
    for name in COLUMNS:
      out[f"{split}_{name}"] = np.ascontiguousarray(arrays[name][rows])
  # The serving request: a user, 100 behaviours and 500 candidates drawn from
  # the (item, category) pairs of the training targets.
  pairs = np.unique(np.stack([train["item_id"], train["category_id"]], 1), axis=0)
  pick = pairs[np.random.default_rng(2).integers(
      len(pairs), size=SERVE_HISTORY + SERVE_CANDIDATES)]
  from beam_jobs.vocabulary import load_vocabularies
  frequencies = {n: v.frequencies().tolist()
                 for n, v in load_vocabularies(directory, names).items()}
  return _write_export(
      path, out, int(train["user_id"][0]), pick[:, 0], pick[:, 1], vocab,
      generator=None, quick=False, source=os.path.abspath(directory),
      protocol=metadata["options"]["samples"]["protocol"],
      frequencies=frequencies)


def _hash(arrays: dict) -> str:
  digest = hashlib.sha256()
  for name in sorted(arrays):
    value = np.ascontiguousarray(arrays[name])
    digest.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def _load(path: str) -> tuple:
  """The export and its manifest, after checking the hash and shapes."""
  with open(path + ".json") as f:
    manifest = json.load(f)
  with np.load(path) as npz:
    arrays = {k: npz[k] for k in npz.files}
  assert _hash(arrays) == manifest["sha256"], "data differ from the manifest"
  for split in ("train", "test"):
    n = manifest[f"n_{split}"]
    for name in COLUMNS:
      shape = arrays[f"{split}_{name}"].shape
      assert shape[0] == n and (shape[1:] == (MAX_HISTORY,)
                                if "hist_" in name and name != "hist_length"
                                else shape[1:] == ()), (split, name, shape)
  if LATENCY_ONLY:  # one training step, one test batch: timing only
    arrays = {k: v[:BATCH] if k.startswith(("train_", "test_")) else v
              for k, v in arrays.items()}
    manifest = dict(manifest, n_train=BATCH, n_test=BATCH)
  split = lambda s: {n: arrays[f"{s}_{n}"] for n in COLUMNS}
  serve = {k[len("serve_"):]: v for k, v in arrays.items()
           if k.startswith("serve_")}
  return split("train"), split("test"), serve, manifest


# --------------------------------------------------------------------------- #
# Shared measurements (run inside each subprocess).
# --------------------------------------------------------------------------- #
def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Exact ROC AUC (ties count one half), the same function for everyone."""
  labels = np.asarray(labels, np.float64).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  # Average ranks over ties.
  starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
  ends = np.r_[starts[1:], len(scores)]
  for s, e in zip(starts, ends):
    ranks[order[s:e]] = (s + e + 1) / 2.0
  pos = labels > 0.5
  n_pos, n_neg = pos.sum(), (~pos).sum()
  return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: np.ndarray, p: np.ndarray) -> float:
  p = np.clip(np.asarray(p, np.float64).ravel(), 1e-7, 1 - 1e-7)
  y = np.asarray(labels, np.float64).ravel()
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _examples_per_s(ends: list, skip: int) -> float:
  """Batch size over the median time between consecutive step ends, the
  first `skip` steps (tracing, compilation, warm-up) left out."""
  steps = np.diff(np.asarray(ends))[skip:]
  return BATCH / float(np.median(steps))


def _latency(call, reps: int) -> dict:
  for _ in range(10):
    call()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  times = np.asarray(times) * 1000
  return {"p50_ms": float(np.percentile(times, 50)),
          "p99_ms": float(np.percentile(times, 99)), "calls": reps}


def _check_counts(expected_train: int, trained: int, expected_test: int,
                  tested: int) -> None:
  assert trained == expected_train, (trained, expected_train)
  assert tested == expected_test, (tested, expected_test)


def validation_rows(train: dict) -> np.ndarray:
  """Training rows of the users held out by `--schedule validated`: a fixed
  VALIDATION_FRACTION of the training users (whole users, one draw for every
  library, model and seed)."""
  users = np.unique(train["user_id"])
  held = np.random.default_rng(VALIDATION_SEED).choice(
      users, size=max(1, round(VALIDATION_FRACTION * len(users))),
      replace=False)
  return np.isin(train["user_id"], held)


def epoch_rows(rows: np.ndarray, epoch: int) -> np.ndarray:
  """The training rows `rows` (in the export's order) as epoch `epoch`
  (0-based) reads them, whole batches only: in the export's order in the
  first epoch and in a fixed permutation (seeded by the epoch, the same for
  every library and seed) in each later one."""
  if epoch:
    rows = rows[np.random.default_rng(1000 + epoch).permutation(len(rows))]
  return rows[:len(rows) // BATCH * BATCH]


def run_schedule(train_epoch, predict, train: dict, test: dict,
                 args) -> dict:
  """Trains and scores one library's model on `args.schedule`.

  Args:
    train_epoch: `train_epoch(rows)` trains one pass over the training rows
      `rows` (an index array, read in that order, batch BATCH) and returns
      how many examples its loop saw.
    predict: `predict(arrays)` returns the click probabilities of every row
      of `arrays` (columns as `train`), in evaluation mode.
    train, test: the export's splits.
    args: the child's arguments (`schedule`, `max_epochs`).

  Returns:
    "p": the test probabilities of the model kept, "train_s" (training time,
    scoring left out), and with "validated" the epoch kept ("epochs", 1-based)
    and every epoch's "curve" (validation AUC, which chooses, and the test
    AUC and log loss it was computed beside, which do not).
  """
  if args.schedule == "one_epoch":
    rows = epoch_rows(np.arange(len(train["label"])), 0)
    start = time.perf_counter()
    seen = train_epoch(rows)
    train_s = time.perf_counter() - start
    p = predict(test)
    _check_counts(len(rows), seen, len(test["label"]), len(p))
    return {"p": p, "train_s": train_s}
  held = validation_rows(train)
  validation = {n: v[held] for n, v in train.items()}
  training_rows = np.flatnonzero(~held)  # the users not held out
  best, curve, train_s = None, [], 0.0
  for epoch in range(args.max_epochs):
    rows = epoch_rows(training_rows, epoch)
    start = time.perf_counter()
    seen = train_epoch(rows)
    train_s += time.perf_counter() - start
    p_val, p = predict(validation), predict(test)
    _check_counts(len(rows), seen, len(test["label"]), len(p))
    assert len(p_val) == int(held.sum())
    curve.append({"val_auc": auc(validation["label"], p_val),
                  "test_auc": auc(test["label"], p),
                  "test_logloss": logloss(test["label"], p)})
    if best is None or curve[-1]["val_auc"] > curve[best]["val_auc"]:
      best, kept = epoch, p
    elif epoch - best >= PATIENCE:
      break
  return {"p": kept, "train_s": train_s, "epochs": best + 1, "curve": curve,
          "validation_rows": int(held.sum()),
          "validation_users": int(len(np.unique(validation["user_id"])))}


def _scored(run: dict, labels: np.ndarray) -> dict:
  """The quality fields of a result record from `run_schedule`'s output."""
  out = {"auc": auc(labels, run["p"]), "logloss": logloss(labels, run["p"]),
         "train_s": run["train_s"]}
  out.update({k: run[k] for k in ("epochs", "curve", "validation_rows",
                                  "validation_users") if k in run})
  return out


# --------------------------------------------------------------------------- #
# Ours: tfrs_din DINModel / DIENModel, Keras fit on a tf.data of the arrays.
# --------------------------------------------------------------------------- #
def run_ours(model_name: str, seed: int, path: str, args) -> dict:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tfrs_din
  import tensorflow as tf
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  from tfrs_din.features import CategoricalFeature, FeatureSpec
  from tfrs_din.training.config import TrainConfig, with_options
  from tfrs_din.training.trainer import build_model, make_optimizer
  train, test, serve, manifest = _load(path)
  vocab = manifest["vocab"]
  if "frequencies" not in manifest:
    raise ValueError(f"{path}: exported before the manifest held the id "
                     "counts (MBA's n_j); delete it to export it again")

  def feature(name):
    return CategoricalFeature(name, vocab[name], EMBEDDING,
                              frequencies=manifest["frequencies"][name])

  spec = FeatureSpec(user_features=[feature("user_id")],
                     item_features=[feature("item_id"), feature("category_id")],
                     max_history=MAX_HISTORY)
  # The model a user gets from `DINModel(spec)` / `DIENModel(spec)` and
  # `tfrs-din train` (constructor defaults, LazyAdam 1e-3), with a
  # variant's changes.
  overrides = OURS_VARIANTS.get(args.library.partition(":")[2], {})
  config = with_options(TrainConfig(model=model_name, seed=seed), **overrides)
  tf.keras.utils.set_random_seed(seed)
  model = build_model(spec, config)
  model.compile(make_optimizer(config.optimizer, config.learning_rate,
                               config.adam_epsilon))
  names = [n for n in COLUMNS if model_name == "dien" or not n.startswith("neg_")]
  tensors = {n: tf.constant(train[n]) for n in names}

  class Steps(tf.keras.callbacks.Callback):
    ends, seen = [], 0

    def on_train_batch_end(self, batch, logs=None):
      Steps.ends.append(time.perf_counter())
      Steps.seen += BATCH

  def train_epoch(rows):
    seen = Steps.seen
    dataset = tf.data.Dataset.from_tensor_slices(rows).batch(BATCH).map(
        lambda i: {n: tf.gather(t, i) for n, t in tensors.items()}).prefetch(2)
    model.fit(dataset, epochs=1, verbose=0, callbacks=[Steps()])
    return Steps.seen - seen

  predict = tf.function(lambda f: model(f, training=False))

  def predict_all(arrays):
    return _in_chunks(lambda rows: predict({
        n: tf.constant(arrays[n][rows]) for n in COLUMNS
        if not n.startswith("neg_") and n != "label"}).numpy(),
        len(arrays["label"]))

  result = _scored(run_schedule(train_epoch, predict_all, train, test, args),
                   test["label"])
  result.update(examples_per_s=_examples_per_s(Steps.ends, args.skip),
                steps=len(Steps.ends))
  result["params"] = int(sum(np.prod(v.shape)
                             for v in model.trainable_variables))
  result["embedding_params"] = int(sum(
      np.prod(t.embeddings.shape) for t in model.embedder.tables.values()))
  parts = {layer.name: int(sum(np.prod(v.shape)
                               for v in layer.trainable_variables))
           for layer in model._flatten_layers(include_self=False,
                                              recursive=False)}
  parts["model's own"] = result["params"] - sum(parts.values())
  result["params_by_part"] = {k: v for k, v in parts.items() if v}
  if args.latency:
    user = {"user_id": tf.constant(serve["user_id"]),
            "hist_item_id": tf.constant(serve["hist_item_id"]),
            "hist_category_id": tf.constant(serve["hist_category_id"]),
            "hist_length": tf.constant(serve["hist_length"])}
    candidates = {"item_id": tf.constant(serve["item_id"]),
                  "category_id": tf.constant(serve["category_id"])}
    tiled = {k: tf.repeat(v, SERVE_CANDIDATES, axis=0) for k, v in user.items()}
    tiled.update(item_id=candidates["item_id"][0],
                 category_id=candidates["category_id"][0])
    fast = tf.function(lambda u, c: model.score_candidates(u, c))
    np.testing.assert_allclose(fast(user, candidates).numpy()[0],
                               predict(tiled).numpy(), rtol=1e-4, atol=1e-5)
    result["latency"] = _latency(lambda: fast(user, candidates).numpy(),
                                 args.latency_reps)
    result["latency_kind"] = "score_candidates (user work once)"
    result["latency_tiled"] = _latency(lambda: predict(tiled).numpy(),
                                       args.latency_reps)
  result["versions"] = {"tfrs_din": _version("tfrs-din"),
                        "tensorflow": tf.__version__,
                        "tf_keras": _version("tf-keras")}
  result["fused_kernels"] = bool(getattr(model, "use_fused_kernels", False))
  return result


# --------------------------------------------------------------------------- #
# PyTorch peers.
# --------------------------------------------------------------------------- #
def _torch_setup(seed: int, threads: int):
  import torch
  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(seed)
  np.random.seed(seed)
  import random
  random.seed(seed)
  return torch


def _torch_result(model, train_epoch, predict, train, test, ends, args,
                  notes, library, version) -> dict:
  """Trains and scores a PyTorch peer (`run_schedule`), and its result
  record: quality, speed, sizes, and the versions of `library` and torch."""
  import torch  # pylint: disable=g-import-not-at-top
  run = run_schedule(train_epoch, predict, train, test, args)
  versions = {library: version, "torch": torch.__version__}
  total, emb, parts = _torch_params(model)
  return dict(_scored(run, test["label"]),
              examples_per_s=_examples_per_s(ends, args.skip),
              steps=len(ends), params=total, embedding_params=emb,
              params_by_part=parts, notes=notes, versions=versions)


def _in_chunks(score, size: int, chunk: int = 2048) -> np.ndarray:
  """score(rows) over `size` rows, `chunk` at a time, as one flat array."""
  return np.concatenate([np.asarray(score(slice(first, first + chunk))).ravel()
                         for first in range(0, size, chunk)])


def _tiled_rows(serve: dict) -> dict:
  """The latency request as rows: the serving user's history and id repeated
  for each of its SERVE_CANDIDATES candidates."""
  tiled = {k: np.repeat(v, SERVE_CANDIDATES, axis=0)
           for k, v in serve.items() if k.startswith("hist_") or k == "user_id"}
  tiled.update(item_id=serve["item_id"][0], category_id=serve["category_id"][0])
  return tiled


def _tiled_latency(result: dict, call, args) -> dict:
  """`result` with the latency of `call`, a peer scoring the tiled rows."""
  result["latency"] = _latency(call, args.latency_reps)
  result["latency_kind"] = "500 tiled rows (no per-user call)"
  return result


def _torch_params(model) -> tuple:
  """Trainable parameters: total, in embedding tables, by top-level part."""
  total = emb = 0
  parts = collections.Counter()
  for name, p in model.named_parameters():
    if p.requires_grad:
      total += p.numel()
      parts[name.split(".")[0]] += p.numel()
      if "embedding" in name:
        emb += p.numel()
  return total, emb, dict(parts)


def run_fuxictr(model_name: str, seed: int, path: str, args) -> dict:
  """FuxiCTR 2.3.10's LongCTR DIN / DIEN (the only DIN/DIEN its wheel ships).

  Their data loader reads Parquet and looks items up per batch; the same
  batch layout is built here from the arrays: (batch_dict, item_dict, mask)
  with the history and the target item in item_dict ([B * (T + 1)], target
  last), the history cut to the longest in the batch as their collator does.
  """
  torch = _torch_setup(seed, args.threads)
  import fuxictr
  from fuxictr.features import FeatureMap
  train, test, serve, manifest = _load(path)
  vocab = manifest["vocab"]
  feature_map = FeatureMap("peers", tempfile.gettempdir())
  feature_map.features = collections.OrderedDict(
      user_id={"type": "categorical", "source": "user",
               "vocab_size": vocab["user_id"], "padding_idx": 0},
      item_id={"type": "categorical", "source": "item",
               "vocab_size": vocab["item_id"], "padding_idx": 0},
      category_id={"type": "categorical", "source": "item",
                   "vocab_size": vocab["category_id"], "padding_idx": 0})
  feature_map.labels = ["label"]
  feature_map.default_emb_dim = EMBEDDING
  feature_map.num_fields = feature_map.get_num_fields()
  feature_map.set_column_index()
  common = dict(gpu=-1, learning_rate=1e-3, embedding_dim=EMBEDDING,
                net_dropout=0, batch_norm=False, embedding_regularizer=None,
                net_regularizer=None, optimizer="adam",
                loss="binary_crossentropy", verbose=0, metrics=["AUC"],
                model_root=tempfile.mkdtemp(), dnn_hidden_units=[200, 80],
                dnn_activations="Dice")
  common.update(FUXICTR_VARIANTS.get(args.library.partition(":")[2], {}))
  notes = []
  if model_name == "din":
    from model_zoo.LongCTR.DIN import DIN
    model = DIN(feature_map, attention_hidden_units=[80, 40],
                attention_hidden_activations="Dice",
                attention_output_activation=None, din_use_softmax=False,
                **common)
  else:
    from model_zoo.LongCTR.DIEN import DIEN
    # aux_loss_alpha is what the repository's older model_zoo/DIEN took; the
    # LongCTR DIEN swallows it in **kwargs: checked below.
    model = DIEN(feature_map, gru_type="AUGRU", enable_sum_pooling=True,
                 attention_type="bilinear_attention",
                 use_attention_softmax=True, aux_loss_alpha=1.0, **common)
    aux = [n for n, _ in model.named_modules() if "aux" in n.lower()]
    if aux or hasattr(model, "aux_loss_alpha"):
      raise RuntimeError(f"FuxiCTR DIEN has an auxiliary part now: {aux}")
    notes.append("LongCTR DIEN has no auxiliary loss (no aux net, no negative "
                 "sequence input); aux_loss_alpha=1.0 was accepted by **kwargs "
                 "and ignored")

  def batch(arrays, rows, hist_len=None):
    length = arrays["hist_length"][rows]
    width = hist_len or int(length.max())  # their collator: longest in batch
    hist_item = arrays["hist_item_id"][rows][:, :width]
    hist_cat = arrays["hist_category_id"][rows][:, :width]
    items = np.concatenate([hist_item, arrays["item_id"][rows][:, None]], 1)
    cats = np.concatenate([hist_cat, arrays["category_id"][rows][:, None]], 1)
    batch_dict = {"user_id": torch.from_numpy(arrays["user_id"][rows])}
    if "label" in arrays:
      batch_dict["label"] = torch.from_numpy(arrays["label"][rows])
    item_dict = {"item_id": torch.from_numpy(items.reshape(-1)),
                 "category_id": torch.from_numpy(cats.reshape(-1))}
    mask = torch.from_numpy(hist_item > 0).float()
    return batch_dict, item_dict, mask

  model._max_gradient_norm = 10.0  # BaseModel.fit's default clipping
  ends = []

  def train_epoch(rows):
    model.train()
    seen = 0
    for first in range(0, len(rows), BATCH):
      model._batch_index = first // BATCH  # reset every epoch, as its fit does
      data = batch(train, rows[first:first + BATCH])
      model.train_step(data)
      seen += len(data[0]["user_id"])
      ends.append(time.perf_counter())
    return seen

  def predict(arrays):
    model.eval()
    with torch.no_grad():
      return _in_chunks(lambda rows: model.forward(batch(arrays, rows))[
          "y_pred"].numpy(), len(arrays["label"]))

  result = _torch_result(model, train_epoch, predict, train, test, ends, args,
                         notes, "fuxictr", fuxictr.__version__)
  if args.latency:
    tiled = _tiled_rows(serve)

    def call():
      with torch.no_grad():
        return model.forward(batch(tiled, slice(None), SERVE_HISTORY))["y_pred"]
    _tiled_latency(result, call, args)
  return result


def _deepctr_columns(vocab: dict, max_len: int, negatives: bool):
  from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
  columns = [SparseFeat(n, vocab[n], embedding_dim=EMBEDDING)
             for n in ("user_id", "item_id", "category_id")]
  prefixes = ["hist_"] + (["neg_hist_"] if negatives else [])
  for prefix in prefixes:
    for n in ("item_id", "category_id"):
      columns.append(VarLenSparseFeat(
          SparseFeat(prefix + n, vocab[n], embedding_dim=EMBEDDING,
                     embedding_name=n), maxlen=max_len,
          length_name="hist_length"))
  return columns


def _deepctr_model(model_name: str, vocab: dict, max_len: int, seed: int):
  """DeepCTR-Torch 0.3.0's DIN / DIEN with the shared dimensions.

  Its DNN builds Dice with dice_dim=3 (for [B, T, D] inputs) in the towers
  too, whose inputs are [B, D]: the first batch then fails Dice's
  `assert x.dim() == self.dim`. The tower's activations are replaced by the
  library's own Dice(units, dim=2) (the attention nets keep dim 3).
  """
  from deepctr_torch.layers.activation import Dice
  from deepctr_torch.models import DIEN, DIN
  common = dict(dnn_hidden_units=(200, 80), dnn_activation="dice",
                l2_reg_dnn=0.0, l2_reg_embedding=0.0, dnn_dropout=0.0,
                seed=seed, task="binary", device="cpu")
  history = ["item_id", "category_id"]
  if model_name == "din":
    model = DIN(_deepctr_columns(vocab, max_len, False), history,
                dnn_use_bn=False, att_hidden_size=(80, 40),
                att_activation="dice", att_weight_normalization=False, **common)
  else:
    # Its logloss is summed over the batch (fit: reduction="sum") and its
    # auxiliary loss is the mean over the 2N click/no-click terms; ours is
    # the batch mean plus the mean over steps of (click + no-click) terms.
    # alpha = 2 x batch makes its objective 256x ours (Adam: the same steps
    # up to epsilon).
    model = DIEN(_deepctr_columns(vocab, max_len, True), history,
                 gru_type="AUGRU", use_negsampling=True, alpha=2.0 * BATCH,
                 use_bn=False, att_hidden_units=(80, 40), att_activation="dice",
                 att_weight_normalization=True, **common)
  model.dnn.activation_layers = type(model.dnn.activation_layers)(
      [Dice(units, dim=2) for units in (200, 80)])
  model.compile("adam", "binary_crossentropy")
  return model


def run_deepctr_torch(model_name: str, seed: int, path: str, args) -> dict:
  torch = _torch_setup(seed, args.threads)
  import deepctr_torch
  train, test, serve, manifest = _load(path)
  vocab = manifest["vocab"]
  model = _deepctr_model(model_name, vocab, MAX_HISTORY, seed)
  notes = ["tower Dice replaced by the library's Dice(units, dim=2): its DNN "
           "builds dice_dim=3 and fails on the 2-D tower input"]
  if model_name == "dien":
    notes.append("auxiliary negatives as its own neg_hist_<feature> columns "
                 "(sharing the item/category tables); alpha=512 because its "
                 "logloss is summed over the batch")
    notes.append("interest-evolution attention is its DIN-style MLP "
                 "(80-40 Dice, softmax); it has no bilinear form")
  ends, seen = [], [0]
  step = model.optim.step

  def timed_step(*a, **k):
    out = step(*a, **k)
    ends.append(time.perf_counter())
    return out
  model.optim.step = timed_step
  model.register_forward_pre_hook(
      lambda m, inputs: seen.__setitem__(0, seen[0] + inputs[0].shape[0])
      if m.training else None)
  def train_epoch(rows):
    before = seen[0]
    model.fit({n: train[n][rows] for n in model.feature_index},
              train["label"][rows], batch_size=BATCH, epochs=1, verbose=0,
              shuffle=False)
    return seen[0] - before

  def predict(arrays):
    return model.predict({n: arrays[n] for n in model.feature_index},
                         batch_size=2048).ravel()

  result = _torch_result(model, train_epoch, predict, train, test, ends, args,
                         notes, "deepctr_torch", deepctr_torch.__version__)
  if args.latency:
    # Columns are fixed by maxlen: the same weights in a model built for a
    # history of 100 (no parameter depends on maxlen).
    server = _deepctr_model(model_name, vocab, SERVE_HISTORY, seed)
    server.load_state_dict(model.state_dict())
    server.eval()
    tiled = _tiled_rows(serve)
    tiled.update(neg_hist_item_id=tiled["hist_item_id"],  # unused in eval
                 neg_hist_category_id=tiled["hist_category_id"])
    columns = []
    for name in server.feature_index:
      value = tiled[name]
      columns.append(value[:, None] if value.ndim == 1 else value)
    rows = torch.from_numpy(np.concatenate(columns, axis=1)).float()
    # Check: on test rows padded from 50 to 100 positions, the served model
    # gives the trained model's outputs.
    first = {n: test[n][:4] for n in model.feature_index}
    padded = []
    for name in server.feature_index:
      value = first[name]
      if value.ndim == 2:
        value = np.pad(value, [(0, 0), (0, SERVE_HISTORY - MAX_HISTORY)])
      padded.append(value[:, None] if value.ndim == 1 else value)
    with torch.no_grad():
      np.testing.assert_allclose(
          server(torch.from_numpy(np.concatenate(padded, 1)).float()).numpy().ravel(),
          model.predict(first, batch_size=4).ravel(), rtol=1e-4, atol=1e-6)

    def call():
      with torch.no_grad():
        return server(rows)
    _tiled_latency(result, call, args)
  return result


def item_categories(vocab_size: int, pairs) -> np.ndarray:
  """The category id of every item id, from (item ids, category ids) pairs
  of arrays of the export: RecBole's DIN and DIEN take the category as an
  item feature, looked up by item id, so each item must have one category.

  Args:
    vocab_size: item ids run from 0 to vocab_size - 1.
    pairs: (items, categories) arrays of the same shape; item 0 (padding)
      is skipped.

  Returns:
    [vocab_size] int64, the category of each item; 0 for padding and for
    the items no row holds.

  Raises:
    ValueError: an item id out of range, or an item with two categories.
  """
  items = np.concatenate([np.ravel(i) for i, _ in pairs]).astype(np.int64)
  cats = np.concatenate([np.ravel(c) for _, c in pairs]).astype(np.int64)
  keep = items != 0
  items, cats = items[keep], cats[keep]
  bad = (items < 0) | (items >= vocab_size)
  if bad.any():
    raise ValueError(f"item id {int(items[bad][0])} is out of the item "
                     f"vocabulary of {vocab_size}: export the data again")
  table = np.zeros(vocab_size, np.int64)
  table[items] = cats
  clash = table[items] != cats
  if clash.any():
    item = int(items[clash][0])
    raise ValueError(
        f"item id {item} has category ids "
        f"{sorted(set(cats[items == item].tolist()))} in the export; "
        "RecBole looks the category up by item id (an item feature), so "
        "each item needs one: use --libraries without recbole on this data")
  return table


def _recbole_model(model_name: str, vocab: dict, categories: np.ndarray,
                   max_len: int):
  """RecBole 1.2.1's DIN / DIEN with the shared dimensions, and its config.

  The config is a real `recbole.config.Config` (RecBole's defaults for
  DIN / DIEN, the values below changed). The data set is a stand-in (see
  `Fields`): a real `recbole.data.dataset.Dataset` is built from atomic
  files and maps every token to ids of its own, where the arrays keep the
  export's ids and vocabularies.

  Args:
    model_name: "din" or "dien".
    vocab: vocabulary size of user_id, item_id and category_id (id 0 is
      padding, as RecBole's "[PAD]").
    categories: `item_categories` of the export.
    max_len: MAX_ITEM_LIST_LENGTH, the width every history is padded to (its
      attention masks with a [1, max_len] position table).
  """
  import torch
  from recbole.config import Config
  from recbole.data.interaction import Interaction
  from recbole.model.sequential_recommender import DIEN, DIN
  from recbole.utils import FeatureType
  config_dict = dict(
      gpu_id="", use_gpu=False, MAX_ITEM_LIST_LENGTH=max_len,
      embedding_size=EMBEDDING,
      # One list sizes the tower, the attention net and DIEN's auxiliary
      # net alike: the tower's 200-80 is kept.
      mlp_hidden_size=[200, 80], dropout_prob=0.0, pooling_mode="mean",
      learner="adam", learning_rate=1e-3, weight_decay=0.0,
      train_batch_size=BATCH, clip_grad_norm=None)
  if model_name == "dien":
    # Its auxiliary loss is the mean over the 2|V| click and no-click terms
    # of the valid steps V; alpha 2 makes it their sum over |V|, the weight
    # DeepCTR-Torch's alpha gives it (see `_deepctr_model`).
    config_dict.update(gru_type="AUGRU", alpha=2.0)
  if int(np.__version__.split(".")[0]) >= 2:
    raise RuntimeError(
        f"RecBole 1.2.1's Config needs NumPy < 2 (it sets np.float = "
        f"np.float_), found {np.__version__}: pip install 'numpy<2' "
        "'pandas<3' 'pyarrow<22' into the peers' venv")
  argv, sys.argv = sys.argv, sys.argv[:1]  # Config also reads --key=value
  try:                                      # from the command line
    config = Config(model=model_name.upper(), dataset="peers",
                    config_dict=config_dict)
  finally:
    sys.argv = argv
  assert (config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]) == (
      "user_id", "item_id"), "RecBole's default field names changed"

  class Fields:
    """Exactly what DIN, DIEN and their `ContextSeqEmbLayer` read from a
    RecBole Dataset: `num`, `field2type`, `get_user_feature`,
    `get_item_feature` and `config`. The user table holds the user id only;
    the item table the item id and its category (a token feature)."""
    field2type = {n: FeatureType.TOKEN
                  for n in ("user_id", "item_id", "category_id")}

    def __init__(self):
      self.config = config

    def num(self, field: str) -> int:
      return vocab[field]

    def get_user_feature(self):
      return Interaction({"user_id": torch.arange(vocab["user_id"])})

    def get_item_feature(self):
      return Interaction({"item_id": torch.arange(vocab["item_id"]),
                          "category_id": torch.from_numpy(categories)})

  model = (DIN if model_name == "din" else DIEN)(config, Fields())
  return model.to(config["device"]), config


def run_recbole(model_name: str, seed: int, path: str, args) -> dict:
  """RecBole 1.2.1's DIN / DIEN (its sequential recommenders).

  Batches are its `Interaction`s built from the arrays: the history as
  `item_id_list` and `item_length` (padded after the history to
  MAX_HISTORY, as its data augmentation pads), the candidate as `item_id`,
  the label, and for DIEN the export's negatives as `neg_item_id_list`; the
  category is an item feature, looked up by item id (`item_categories`).
  The step is its Trainer's `_train_epoch` (zero_grad, `calculate_loss`,
  backward, Adam step; no clipping, no weight decay), the optimizer what its
  `_build_optimizer` builds for learner "adam".
  """
  torch = _torch_setup(seed, args.threads)
  import recbole
  from recbole.data.interaction import Interaction
  train, test, serve, manifest = _load(path)
  vocab = manifest["vocab"]
  pairs = [(split[items], split[cats]) for split in (train, test, serve)
           for items, cats in (("item_id", "category_id"),
                               ("hist_item_id", "hist_category_id"),
                               ("neg_hist_item_id", "neg_hist_category_id"))
           if items in split]
  categories = item_categories(vocab["item_id"], pairs)
  if model_name == "dien":
    for split, arrays in (("train", train), ("test", test)):
      empty = int((arrays["hist_length"] < 1).sum())
      if empty:
        raise ValueError(
            f"{path}: {empty} {split} rows have no history; RecBole's DIEN "
            "packs each history (pack_padded_sequence), which cannot be "
            "empty: run --libraries without recbole on this data")
  model, config = _recbole_model(model_name, vocab, categories, MAX_HISTORY)
  notes = [
      "mlp_hidden_size [200, 80] sizes the tower and the attention net "
      "(sigmoid MLP, no Dice) alike; it has no separate attention sizes",
      "tower: Linear, BatchNorm1d (hard-coded), its Dice, whose alpha is a "
      "constant 0 (not a parameter): x * sigmoid(x) after the batch norm",
      "category as an item feature looked up by item id; item and category "
      "share one FMEmbedding table (same size as two)",
      "Xavier-normal embeddings and linear layers (its _init_weights)"]
  if model_name == "din":
    notes.append("DIN's tower takes no user id: its user table is built "
                 "(and counted) but unused")
  else:
    notes.append("auxiliary negatives: the export's, as neg_item_id_list "
                 "(its own DIENDataset draws them once per interaction, "
                 "uniformly, excluding only the positive of that step); "
                 "alpha=2.0 (its auxiliary loss is a mean over the 2|V| "
                 "terms)")
    notes.append("auxiliary net 72-200-80-1 without activations (the same "
                 "mlp_hidden_size); AUGRU cell weights N(0, 1) (torch.randn, "
                 "left by its _init_weights); attention softmax over the "
                 "history, scores divided by sqrt(36)")
    notes.append("its predict computes the auxiliary loss too: it needs a "
                 "negative sequence when scoring (the history is passed when "
                 "serving; the scores do not depend on it)")

  def batch(arrays, rows, width=MAX_HISTORY):
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    pad = lambda a: tensor(np.pad(a, [(0, 0), (0, width - a.shape[1])]))
    fields = {model.USER_ID: tensor(arrays["user_id"][rows]),
              model.POS_ITEM_ID: tensor(arrays["item_id"][rows]),
              model.ITEM_SEQ: pad(arrays["hist_item_id"][rows]),
              model.ITEM_SEQ_LEN: tensor(arrays["hist_length"][rows])}
    if model_name == "dien":
      fields[model.NEG_ITEM_SEQ] = pad(arrays["neg_hist_item_id"][rows])
    if "label" in arrays:
      fields[model.LABEL_FIELD] = tensor(arrays["label"][rows])
    return Interaction(fields)

  optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"],
                               weight_decay=config["weight_decay"])
  ends, seen = [], [0]
  # Its calculate_loss calls self.forward, which runs no hooks: the rows are
  # counted where the embedding layer takes the user ids.
  model.embedding_layer.register_forward_pre_hook(
      lambda m, inputs: seen.__setitem__(0, seen[0] + inputs[0].shape[0])
      if m.training else None)

  def train_epoch(rows):
    model.train()
    before = seen[0]
    for first in range(0, len(rows), BATCH):
      interaction = batch(train, rows[first:first + BATCH])
      optimizer.zero_grad()
      loss = model.calculate_loss(interaction)
      if torch.isnan(loss):  # its Trainer's _check_nan
        raise ValueError("Training loss is nan")
      loss.backward()
      optimizer.step()
      ends.append(time.perf_counter())
    return seen[0] - before

  def predict(arrays):
    model.eval()
    with torch.no_grad():
      return _in_chunks(lambda rows: model.predict(batch(arrays, rows)).numpy(),
                        len(arrays["label"]))

  result = _torch_result(model, train_epoch, predict, train, test, ends, args,
                         notes, "recbole", recbole.__version__)
  if args.latency:
    # The attention's position table is sized by MAX_ITEM_LIST_LENGTH: the
    # same weights in a model built for a history of 100 (no parameter
    # depends on it), checked on test rows padded to 100.
    server, _ = _recbole_model(model_name, vocab, categories, SERVE_HISTORY)
    server.load_state_dict(model.state_dict())
    model.eval()
    server.eval()
    first = {n: test[n][:4] for n in COLUMNS}
    with torch.no_grad():
      np.testing.assert_allclose(
          server.predict(batch(first, slice(None), SERVE_HISTORY)).numpy(),
          model.predict(batch(first, slice(None))).numpy(),
          rtol=1e-4, atol=1e-6)
    tiled = _tiled_rows(serve)
    tiled.update(neg_hist_item_id=tiled["hist_item_id"])
    request = batch(tiled, slice(None), SERVE_HISTORY)

    def call():
      with torch.no_grad():
        return server.predict(request)
    _tiled_latency(result, call, args)
  return result


def _version(distribution: str) -> str:
  from importlib import metadata
  try:
    return metadata.version(distribution)
  except metadata.PackageNotFoundError:
    return "not installed"


RUNNERS = {"ours": run_ours, "fuxictr": run_fuxictr,
           "deepctr_torch": run_deepctr_torch, "recbole": run_recbole}


# --------------------------------------------------------------------------- #
# Driver.
# --------------------------------------------------------------------------- #
def _child(args) -> int:
  """One run, in this process: prints one JSON line."""
  global LATENCY_ONLY
  LATENCY_ONLY = args.latency_only
  load = os.getloadavg()[0]
  start = time.perf_counter()
  result = RUNNERS[args.library.partition(":")[0]](args.model, args.seed,
                                                   args.data, args)
  result.update(library=args.library, model=args.model, seed=args.seed,
                schedule=args.schedule, threads=args.threads,
                latency_only=args.latency_only,
                wall_s=time.perf_counter() - start,
                peak_rss_mb=resource.getrusage(
                    resource.RUSAGE_SELF).ru_maxrss / 1024,
                load_start=load, load_end=os.getloadavg()[0])
  print("PEERS_RESULT " + json.dumps(result), flush=True)
  return 0


def _done(path: str) -> dict:
  runs = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.strip():
          run = json.loads(line)
          runs[(run["data"], run.get("schedule", "one_epoch"),
                run["library"], run["model"], run["seed"])] = run
  return runs


def _run_child(args, library, model, seed, data, latency: bool,
               latency_only: bool = False) -> dict:
  cmd = [args.python or sys.executable, os.path.abspath(__file__), "--child",
         "--library", library, "--model", model, "--seed", str(seed),
         "--data", data, "--skip", str(args.skip),
         "--latency-reps", str(args.latency_reps),
         "--threads", str(args.threads), "--schedule", args.schedule,
         "--max-epochs", str(args.max_epochs)]
  cmd += ["--latency"] if latency else []
  cmd += ["--latency-only"] if latency_only else []
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
  for line in proc.stdout.splitlines():
    if line.startswith("PEERS_RESULT "):
      return json.loads(line[len("PEERS_RESULT "):])
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
  return {"error": "\n".join(tail) or f"exit {proc.returncode}",
          "library": library, "model": model, "seed": seed}


def _seeds(text: str) -> list:
  """"5" -> seeds 0-4; "0,3,4" (or "4,") -> those seeds."""
  if text.isdigit():
    return list(range(int(text)))
  return [int(s) for s in text.split(",") if s]


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="20k training examples, 2 seeds, fewer latency calls")
  parser.add_argument("--libraries", default=",".join(LIBRARIES))
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--seeds", default=None,
                      help="a count (5: seeds 0-4) or a list (0,3,4); "
                           "default 5, 2 with --quick")
  parser.add_argument("--out", default=None,
                      help="JSONL of every run, appended (default: "
                           "$TMPDIR/tfrs_din_peers/runs[-quick].jsonl)")
  parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                        "tfrs_din_peers"),
                      help="where the exported data go")
  parser.add_argument("--python", default=None,
                      help="interpreter of the runs (default: this one); it "
                           "needs tfrs-din[peers]")
  parser.add_argument("--prepared", default=None,
                      help="a `tfrs-din prepare` output to use instead of the "
                           "generator (e.g. Amazon Toys, next_item); its "
                           "report goes to a docs section of its own")
  parser.add_argument("--docs", default=None,
                      help="also rewrite this data set's and schedule's peers "
                      "section of this markdown file (not with --quick)")
  parser.add_argument("--report-only", action="store_true",
                      help="run nothing: the report (and docs section) from "
                           "the runs already in --out")
  parser.add_argument("--skip", type=int, default=None,
                      help="first training steps left out of examples/s")
  parser.add_argument("--latency-reps", type=int, default=None)
  parser.add_argument("--schedule", choices=SCHEDULES, default="one_epoch",
                      help="one_epoch (the default): every training row once, "
                           "in one fixed order. validated: up to "
                           "--max-epochs epochs on the training users not "
                           "held out, the epoch chosen on the held-out users' "
                           "AUC (see run_schedule); its report goes to a docs "
                           "section of its own")
  parser.add_argument("--max-epochs", type=int, default=5,
                      help="at most this many epochs with --schedule validated")
  parser.add_argument("--threads", type=int, default=1,
                      help="compute threads of every library (TensorFlow "
                           "intra- and inter-op, torch.set_num_threads); 0: "
                           "each library's default")
  # A single run (used by the driver).
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--export", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--library", help=argparse.SUPPRESS)
  parser.add_argument("--model", help=argparse.SUPPRESS)
  parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--data", help=argparse.SUPPRESS)
  parser.add_argument("--latency", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--latency-only", action="store_true",
                      help=argparse.SUPPRESS)
  parser.add_argument("--latency-pass", action="store_true",
                      help="also time serving once per library and model in "
                           "a pass of its own (models after one training "
                           "step: the timing does not depend on the weights), "
                           "all back to back, so that they meet the same load; "
                           "the report then shows these latencies")
  args = parser.parse_args()
  args.skip = args.skip if args.skip is not None else (10 if args.quick else 50)
  args.latency_reps = args.latency_reps or (50 if args.quick else 200)
  if args.export:
    manifest = (export_prepared(args.data, args.prepared) if args.prepared
                else export_data(args.data, args.quick))
    # The id counts stay in the manifest file; the log gets the rest.
    print(json.dumps({k: v for k, v in manifest.items() if k != "frequencies"}))
    return 0
  if args.child:
    return _child(args)

  libraries = [x for x in args.libraries.split(",") if x]
  models = [x for x in args.models.split(",") if x]
  known = (set(LIBRARIES) | {f"ours:{v}" for v in OURS_VARIANTS}
           | {f"fuxictr:{v}" for v in FUXICTR_VARIANTS})
  unknown = (set(libraries) - known) | (set(models) - set(MODELS))
  if unknown:
    parser.error(f"unknown {sorted(unknown)}")
  seeds = _seeds(args.seeds or ("2" if args.quick else "5"))
  if not seeds:
    parser.error(f"--seeds {args.seeds!r} names no seed: a count is at least "
                 f"1; seed 0 alone is '0,'")
  if args.max_epochs < 1:
    parser.error(f"--max-epochs must be at least 1, got {args.max_epochs}")
  if args.schedule == "validated" and args.latency_pass:
    parser.error("--latency-pass times the one-epoch models: run it without "
                 "--schedule validated")
  tag = "quick" if args.quick else "full"
  if args.prepared:
    if args.quick:
      parser.error("--quick applies to the generator, not to --prepared")
    tag = (f"prepared-{os.path.basename(os.path.abspath(args.prepared))}-"
           f"{prepared_fingerprint(args.prepared)}")
  os.makedirs(args.workdir, exist_ok=True)
  data = os.path.join(args.workdir, f"data-{tag}.npz")
  out = args.out or os.path.join(args.workdir, f"runs-{tag}.jsonl")
  if not os.path.exists(data + ".json"):
    print(f"[peers] generating {data} ...", flush=True)
    proc = subprocess.run([args.python or sys.executable,
                           os.path.abspath(__file__), "--export", "--data", data]
                          + (["--quick"] if args.quick else [])
                          + (["--prepared", args.prepared] if args.prepared
                             else []),
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              filter(None, [ROOT, os.environ.get("PYTHONPATH")]))))
    if proc.returncode:
      return proc.returncode
  with open(data + ".json") as f:
    manifest = json.load(f)
  print(f"[peers] data {data}: {manifest['n_train']} train / "
        f"{manifest['n_test']} test, sha256 {manifest['sha256'][:12]}", flush=True)
  done = _done(out)
  # Seed by seed, so that an interrupted run leaves whole seeds.
  for i, seed in enumerate(seeds):
    for library in libraries:
      for model in models:
        key = (manifest["sha256"], args.schedule, library, model, seed)
        if args.report_only or (key in done and "error" not in done[key]):
          continue
        print(f"[peers] {library} {model} seed {seed} ...", flush=True)
        # The validated schedule reports quality only: latency does not
        # depend on it and is timed by the one-epoch runs.
        result = _run_child(args, library, model, seed, data,
                            latency=i == 0 and args.schedule == "one_epoch")
        result["data"] = manifest["sha256"]
        result["date"] = datetime.datetime.now().isoformat(timespec="seconds")
        with open(out, "a") as f:
          f.write(json.dumps(result) + "\n")
        done[key] = result
        shown = {k: result[k] for k in ("auc", "examples_per_s", "latency",
                                        "peak_rss_mb", "error") if k in result}
        print(f"[peers]   {json.dumps(shown)}", flush=True)
  latency_out = out[:-len(".jsonl")] + "-latency.jsonl" if out.endswith(
      ".jsonl") else out + "-latency"
  timed = {k[2:4]: r for k, r in _done(latency_out).items()
           if k[0] == manifest["sha256"] and "error" not in r}
  if args.latency_pass and not args.report_only:
    for library in libraries:
      for model in models:
        if (library, model) in timed:
          continue
        print(f"[peers] latency pass: {library} {model} ...", flush=True)
        result = _run_child(args, library, model, 0, data, latency=True,
                            latency_only=True)
        result["data"] = manifest["sha256"]
        result["date"] = datetime.datetime.now().isoformat(timespec="seconds")
        with open(latency_out, "a") as f:
          f.write(json.dumps(result) + "\n")
        if "error" not in result:
          timed[(library, model)] = result
        print(f"[peers]   {json.dumps(result.get('latency', result.get('error')))}",
              flush=True)
  runs = [r for (d, schedule, *_), r in done.items()
          if d == manifest["sha256"] and schedule == args.schedule]
  text = report(runs, manifest, libraries, models, seeds, out,
                timed if args.schedule == "one_epoch" else None,
                args.schedule, args.max_epochs)
  print(text)
  if args.docs and not args.quick:
    write_section(args.docs, text, manifest.get("source"), args.schedule)
    print(f"[peers] rewrote the peers section of {args.docs}")
  return 0


# --------------------------------------------------------------------------- #
# Report.
# --------------------------------------------------------------------------- #
NAMES = {"ours": "tfrs-din (ours)", "fuxictr": "FuxiCTR", "deepctr_torch":
         "DeepCTR-Torch", "recbole": "RecBole"}
NAMES.update({f"ours:{v}": f"tfrs-din (ours), {v}" for v in OURS_VARIANTS})
NAMES.update({f"fuxictr:{v}": f"FuxiCTR, {v}" for v in FUXICTR_VARIANTS})


def _latency_calls(runs) -> str:
  """How many timed calls the runs' latencies are over ("200", "50-200")."""
  calls = sorted({r["latency"].get("calls") for r in runs
                  if isinstance(r.get("latency"), dict)} - {None})
  if not calls:
    return "an unrecorded number of"
  return str(calls[0]) if len(calls) == 1 else f"{calls[0]}-{calls[-1]}"


def prepared_fingerprint(directory: str) -> str:
  """SHA-256 (12 hex digits) of every file of a prepared data set, by
  relative path and content: two folders share an export only when they
  hold the same data, whatever their names."""
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      digest.update(os.path.relpath(path, directory).encode() + b"\0")
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
  return digest.hexdigest()[:12]


def report(runs, manifest, libraries, models, seeds, out, timed=None,
           schedule="one_epoch", max_epochs=None) -> str:
  timed = timed or {}
  validated = schedule == "validated"
  by = collections.defaultdict(list)
  for run in runs:
    if run.get("seed") in seeds:
      by[(run["library"], run["model"])].append(run)
  lines = []
  now = datetime.datetime.now().strftime("%Y-%m-%d")
  source = manifest.get("source")
  peers_run = [NAMES[x] for x in LIBRARIES if x != "ours" and x in libraries]
  title = f"## Peers: {listed(peers_run) or 'none'}"
  if source:
    title += f", on `{os.path.basename(source)}`"
  if validated:
    title += ", validated schedule"
  lines += [
      title, "",
      f"Made by `python benchmarks/peers.py{_section_flags(source, schedule)}` on "
      f"{now}: {platform.machine()}, "
      f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
      "CPU only. The 1-minute load average at each run's start is in the "
      f"JSONL (`{os.path.basename(out)}`): on a shared machine examples/s "
      "and latencies are indicative; AUC does not depend on the load.", ""]
  if source:
    data = (f"Data: the `tfrs-din prepare` output `{os.path.basename(source)}` "
            f"({manifest['protocol']} protocol, its own train/test split and "
            "Beam-drawn auxiliary negatives; history up to "
            f"{manifest['max_history']}, mean {manifest['mean_history']:.1f}; "
            f"click rate {manifest['train_click_rate']:.3f}; vocabularies "
            + ", ".join(f"{k} {v:,}" for k, v in manifest["vocab"].items())
            + ")")
  else:
    data = (f"Data: `tfrs_din.data.synthetic` "
            f"({manifest['generator']['num_users']} "
            f"users, 1000 items, 40 categories, history up to {MAX_HISTORY}, "
            f"mean {manifest['mean_history']:.1f}; click rate "
            f"{manifest['train_click_rate']:.3f})")
  lines += [
      f"{data}, {manifest['n_train']:,} training "
      f"/ {manifest['n_test']:,} test examples"
      f"{'' if source else ' (test = 9% of the users)'}, "
      f"sha256 `{manifest['sha256'][:16]}`. "
      + (_validated_text(runs, max_epochs) if validated else
         "One fixed order of the training rows, batch 256, one epoch, ")
      + "Adam 1e-3, embedding 18; seeds "
      f"{', '.join(map(str, seeds))} set the model initialisation only (the "
      "per-seed column shows which ran"
      + (", with the epoch kept" if validated else "") + ").", ""]
  lines += ["| library | model | test AUC (mean ± sd, n seeds) | per seed | logloss | "
            "train ex/s median (range) | latency p50 / p99 ms (1 user × 500) | peak RSS MB | "
            "params (embeddings) |",
            "|---|---|---|---|---|---|---|---|---|"]
  errors = []
  for model in models:
    for library in libraries:
      good = [r for r in by[(library, model)] if "error" not in r]
      bad = [r for r in by[(library, model)] if "error" in r]
      errors += bad
      if not good:
        lines.append(f"| {NAMES[library]} | {model.upper()} | failed | — | — | "
                     "— | — | — | — |")
        continue
      good.sort(key=lambda r: r["seed"])
      aucs = [r["auc"] for r in good]
      sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
      speeds = [r["examples_per_s"] for r in good]
      per_seed = ", ".join(
          f"{r['seed']}: {r['auc']:.4f}"
          + (f" (epoch {r['epochs']})" if "epochs" in r else "") for r in good)
      lat = timed.get((library, model)) or next(
          (r for r in good if "latency" in r), None)
      latency = "—"
      if lat:
        latency = (f"{lat['latency']['p50_ms']:.1f} / "
                   f"{lat['latency']['p99_ms']:.1f}")
        if "latency_tiled" in lat:
          latency += (f" (tiled rows: {lat['latency_tiled']['p50_ms']:.1f} / "
                      f"{lat['latency_tiled']['p99_ms']:.1f})")
      lines.append(
          f"| {NAMES[library]} | {model.upper()} | {np.mean(aucs):.4f} ± "
          f"{sd:.4f} (n={len(aucs)}) | "
          f"{per_seed} | "
          f"{np.mean([r['logloss'] for r in good]):.4f} | "
          f"{np.median(speeds):,.0f} ({min(speeds):,.0f}-{max(speeds):,.0f}) | "
          f"{latency} | "
          f"{max(r['peak_rss_mb'] for r in good):,.0f} | "
          f"{good[0]['params']:,} ({good[0]['embedding_params']:,}) |")
  versions = {}
  for run in runs:
    versions.update(run.get("versions", {}))
  good = [r for r in runs if "error" not in r and r.get("seed") in seeds]
  loads = [r["load_start"] for r in good if "load_start" in r]
  threads = sorted({r.get("threads") for r in good})
  lines += [
      "",
      "train ex/s: batch size over the median step time of each run (the "
      "first 50 steps, 10 with `--quick`, left out), median over seeds. "
      + ("Latency: not timed on this schedule (it does not depend on it; "
         "see the one-epoch section). " if validated else
         latency_text(timed) if timed else
         "Latency: on the first seed's trained model, ")
      + ("" if validated else f"{_latency_calls(runs)} calls "
      "after 10 warm-up calls; ours is `score_candidates` (user "
      "work once), in brackets ours scoring 500 tiled rows, which is what "
      "the peers do (they have no per-user call). ") + "Peak RSS: the run's own "
      "subprocess (max over seeds). Params: trainable (embedding tables in "
      "brackets).", "",
      f"Compute threads per library: {', '.join(map(str, threads))} "
      "(`--threads`; TensorFlow "
      "intra- and inter-op, `torch.set_num_threads`). PyTorch's OpenMP "
      "threads spin while another job holds a core, so on a shared machine "
      "every library gets one thread (docs/benchmarks.md).", "",
      "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
      + (f". Load average at run starts: {min(loads):.1f}-{max(loads):.1f}."
         if loads else ""), "",
      "Trainable parameters by part (first seed):", "",
      "| library | model | parts |", "|---|---|---|"]
  for model in models:
    for library in libraries:
      first = sorted((r for r in by[(library, model)] if "error" not in r),
                     key=lambda r: r["seed"])
      if first:
        parts = first[0].get("params_by_part", {})
        lines.append(f"| {NAMES[library]} | {model.upper()} | " + "; ".join(
            f"{k} {v:,}" for k, v in parts.items()) + " |")
  lines.append("")
  for error in errors:
    lines.append(f"- failed: {error['library']} {error['model']} seed "
                 f"{error['seed']}: `{error['error'].splitlines()[-1]}`")
  lines.append("")
  return "\n".join(lines) + NOTES


NOTES = """
### What is the same, what differs, what the peers could not do

Checked in every run's subprocess: the SHA-256 and shapes of the arrays it
loaded match the export's manifest; its training loop saw exactly the
manifest's training examples and its test pass scored every test example;
every AUC comes from one NumPy function. Same everywhere: the examples and
their order, batch 256 (whole batches only), the schedule (above),
embedding 18 for
user id, item id and category (an item and the behaviours share the
tables), attention 80-40 with Dice (DIN), tower 200-80 with Dice, GRU 36
(= 2 x 18) with AUGRU (DIEN), Adam with learning rate 1e-3, no dropout, no
batch norm outside Dice, no regularisation (ours without its embedding L2,
DeepCTR-Torch's default L2 on embeddings set to 0), except where RecBole has
no option for it (its attention nets and its tower's batch norm: below).
Initialisers are each library's default (ours N(0, 0.05) embeddings and
Glorot-normal kernels; FuxiCTR N(0, 1e-4) embeddings and Xavier-normal;
DeepCTR-Torch N(0, 1e-4) for embeddings, tower and GRU weights; RecBole
Xavier-normal embeddings and linear layers, torch's default for its
interest-extractor GRU, N(0, 1) for its AUGRU cell). Ours trains with LazyAdam
(the default; with dense gradients the same steps as Adam),
epsilon 1e-7; the peers with torch's Adam, epsilon 1e-8.

The embedding tables are the same size everywhere; the other parameters
differ as follows (counts per part in the table above):
- DIN: ours has 14,400 more tower weights than FuxiCTR: our tower also gets
  a summary s of the behaviours and e_A * s (72 inputs x 200), as the
  official code does (the default; s is the behaviours' mean where the
  official code has their sum: docs/design.md); neither
  peer's DIN has that option. DeepCTR-Torch's
  Dice has an affine batch norm (2 more per unit: +800 for the 400 Dice
  units); ours and FuxiCTR learn one alpha per unit.
- DIEN: ours has FuxiCTR's parts plus our auxiliary net (72-100-50-1 and a
  batch norm of its 72 inputs: 12,545); as shipped it also has the MLP
  attention of the official code in place of the bilinear one, the
  attention-pooled behaviours in the tower (36 x 200 = 7,200 more tower
  weights) and an affine tower input (`ours:fuxictr_dien` is ours with
  FuxiCTR's choices). FuxiCTR's DIEN has the behaviour sum too
  (`enable_sum_pooling=True`; ours the mean). DeepCTR-Torch:
  no behaviour sum (-14,400), a DIN-style MLP attention (80-40 Dice, softmax:
  15,241 weights instead of the bilinear 1,296; it has no bilinear form),
  one bias per gate in its AUGRU cell (-108), its auxiliary net without the
  input norm (12,401).
- RecBole: one `mlp_hidden_size` sizes its tower and its attention net, so
  the attention is 144-200-80-1 with sigmoid units (45,161 weights) where
  the others have 80-40; its tower has a batch norm per layer (+560) and no
  Dice alpha. DIN: no behaviour sum; its user table is built and counted but
  never used (its tower takes no user id, as the official code). DIEN: the
  same MLP attention in the interest evolution (no bilinear form), its
  auxiliary net 72-200-80-1 without activations or input norm (30,761), a
  tower on (final interest state, candidate, user embedding): 90 inputs.

What the peers could not do, as run here:
- **FuxiCTR 2.3.10**: its PyPI wheel ships DIN and DIEN only as
  `model_zoo.LongCTR` models. **Its DIEN has no auxiliary loss**: no
  auxiliary net and no input for negative sequences; the `aux_loss_alpha=1.0`
  passed to it is swallowed by `**kwargs` and ignored (each run asserts
  that the model has no auxiliary module), so FuxiCTR's DIEN trains on the
  click loss alone and never sees the negatives. (The repository's older
  `model_zoo/DIEN`, not in the wheel, has `aux_loss_alpha`, but its
  `add_loss(inputs)` does not match 2.3.10's
  `BaseModel.compute_loss(return_dict, y_true)`, which calls
  `add_loss(return_dict, y_true)`: read from the code, not run.) Its
  training step clips the gradient norm at 10 (`BaseModel.fit`'s default,
  kept). Its LongCTR data loader reads Parquet files plus user and item
  tables and pads histories at the front by default, while its DIEN packs
  sequences with `pack_padded_sequence`, which takes the first `len`
  positions (from the code); the batches here are built in its
  `(batch_dict, item_dict, mask)` layout from the arrays, padded at the end
  and cut to the longest history in the batch as its collator does.
- **DeepCTR-Torch 0.3.0**: with `dnn_activation="dice"` (DIN and DIEN) the
  first batch fails (`AssertionError` in `Dice.forward`): its DNN builds Dice
  for 3-D inputs and the tower's are 2-D; the tower's activations are
  replaced by its own `Dice(units, dim=2)`. DIEN's negatives go in as its
  own `neg_hist_<feature>` columns sharing the item and category tables.
  Its `fit` sums the log loss over the batch while its auxiliary loss is a
  mean over the 2N click/no-click terms, so `alpha` is 512 (= 2 x 256) to
  weigh the auxiliary loss as ours does. Its input columns are fixed by
  `maxlen`: for the history-100 latency the trained weights are loaded into
  the same model built with maxlen 100 (each run checks equal outputs on
  test rows padded to 100).
- **RecBole 1.2.1**: its DIN and DIEN are sequential recommenders built
  from a `Config` and a `Dataset`, which reads atomic files, maps every
  token to ids of its own and makes its own next-item samples. Here they get
  a real `Config` and a stand-in data set with exactly what they read (the
  vocabularies, the field types, the user table and the item table: item id
  and category), and batches as its `Interaction`s built from the arrays
  (history padded at the end, as its own data augmentation pads). The
  category is an item feature looked up by item id (each run checks that
  every item of the export has one category); item ids and categories share
  one table with offsets, without a padding row (padding is masked). Not
  settable: the attention nets are MLPs with sigmoid units over
  [q, k, q - k, q * k], sized by the tower's `mlp_hidden_size`, their scores
  divided by sqrt(36); DIN's weights are not normalised, DIEN's are a
  softmax over the history. The tower is linear, batch norm (hard-coded)
  and its Dice, whose alpha is a constant 0 (a tensor, not a parameter):
  x * sigmoid(x) after the batch norm. DIEN: its own `DIENDataset` draws the
  negatives once per interaction, uniformly from all items except that
  step's positive (history items allowed); here it gets the export's
  negatives as `neg_item_id_list`. Its auxiliary loss is the mean of the
  click and no-click terms over the valid steps, so `alpha` is 2 (the sum
  per valid step, as DeepCTR-Torch's weighting). Its `predict` computes the
  auxiliary loss too, so scoring needs a negative sequence (the serving
  request passes the history; the scores do not depend on it), and its
  AUGRU loops over the packed steps in Python. Its attention masks with a
  position table sized by `MAX_ITEM_LIST_LENGTH`: the history-100 latency
  loads the trained weights into the same model built for 100 (each run
  checks equal outputs on test rows padded to 100). RecBole 1.2.1 needs
  NumPy 1 (its `Config` sets `np.float = np.float_`).
- No peer has a per-user candidate-scoring call: their latency is 500
  tiled rows, and so is ours in brackets.
"""


def listed(names: list) -> str:
  """"A", "A and B", "A, B and C"."""
  return " and ".join(filter(None, [", ".join(names[:-1]), *names[-1:]]))


def _section_flags(source: str, schedule: str) -> str:
  """The flags that name a report's section, e.g. " --prepared toys
  --schedule validated" ("" for the generator, one epoch)."""
  flags = f" --prepared {os.path.basename(source)}" if source else ""
  return flags + (" --schedule validated" if schedule == "validated" else "")


def _validated_text(runs: list, max_epochs: int) -> str:
  """The protocol sentence of `--schedule validated`."""
  held = next((r for r in runs if "validation_rows" in r), None)
  size = (f" ({held['validation_users']:,} users, "
          f"{held['validation_rows']:,} examples)" if held else "")
  return (f"Each library trains for up to {max_epochs} epochs on the "
          f"training users not held out, batch 256 (whole batches), the "
          "first epoch in the export's order and each later one in a fixed "
          "permutation, the same for every library; after every epoch it "
          f"scores the {VALIDATION_FRACTION:.0%} of the training users held out"
          f"{size}, stops once their AUC has not risen for {PATIENCE} epochs, "
          "and the test split is scored with the model of its best "
          "validation epoch (no refit on the held-out users, whose user-id "
          "embeddings stay untrained in every library); ")


def latency_text(timed: dict) -> str:
  loads = [x for r in timed.values() for x in (r["load_start"], r["load_end"])]
  dates = sorted(r["date"] for r in timed.values())
  return ("Latency: from a pass of its own (`--latency-pass`, "
          f"{dates[0][:16]} to {dates[-1][:16]}, load average "
          f"{min(loads):.1f}-{max(loads):.1f}), every library and model "
          "back to back, on models after one training step (the timing does "
          "not depend on the weights), ")


def write_section(path: str, text: str, source: str = None,
                  schedule: str = "one_epoch") -> None:
  """Replaces the generated section (or appends it), keeping the rest; the
  runs on a prepared data set (`source`) and on the validated schedule have
  a section of their own."""
  old = open(path).read() if os.path.exists(path) else ""
  begin, end = SECTION_BEGIN, SECTION_END
  flags = _section_flags(source, schedule)
  if flags:
    begin = begin.replace("peers.py:", f"peers.py{flags}:")
    end = end.replace("peers.py:", f"peers.py{flags}:")
  block = f"{begin}\n{text.rstrip()}\n{end}\n"
  if begin in old and end in old:
    head, rest = old.split(begin, 1)
    new = head + block + rest.split(end, 1)[1].lstrip("\n")
  else:
    new = old.rstrip("\n") + "\n\n" + block
  with open(path, "w") as f:
    f.write(new)


if __name__ == "__main__":
  sys.exit(main())
