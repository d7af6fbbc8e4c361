"""Train models over several seeds on a prepared data set; mean +- sd.

    python benchmarks/seeds.py --data DIR --models base,din --seeds 0,1,2 \
        --variant defaults --variant 'fixed:validation_fraction=0;epochs=3' \
        --out runs.jsonl

Each `--variant NAME[:key=value;...]` overrides `TrainConfig` fields or
model constructor arguments (values parsed as JSON where they parse, e.g.
`mlp_units=[200,80]`, `dropout=0.2`, `epochs=3`).
Models are trained exactly as `tfrs-din train` trains them (validation users,
early stopping), then scored once on the test split. For diagnosis only, the
test split is also scored after every epoch (`test_by_epoch`, and
`test_by_refit_epoch` for the refit); nothing is chosen by it. One JSON line
per run is appended to `--out`, so an interrupted
sweep keeps what it finished and is resumed by running it again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tfrs_din  # noqa: E402,F401  (Keras 2 first)
import tensorflow as tf  # noqa: E402

from tfrs_din.training import predict_split, score, train  # noqa: E402
from tfrs_din.training.config import TrainConfig, with_options  # noqa: E402
from tfrs_din.training.trainer import check_model_options  # noqa: E402


class TestByEpoch(tf.keras.callbacks.Callback):
  """Scores the test split after every epoch (diagnosis, never selection)."""

  def __init__(self, data_dir: str):
    super().__init__()
    self.data_dir = data_dir
    self.scores: List[Dict[str, float]] = []

  def on_epoch_end(self, epoch, logs=None):
    metrics = score(predict_split(self.model, self.data_dir))
    self.scores.append({k: round(metrics[k], 5)
                        for k in ("auc", "gauc", "logloss")})


def parse_variant(text: str) -> tuple:
  """"NAME:key=value;key=value" -> (NAME, {key: value}); values as JSON
  where they parse ("[200,80]", "0.2"), else as strings."""
  name, _, body = text.partition(":")
  overrides = {}
  for item in filter(None, body.split(";")):
    key, _, value = item.partition("=")
    try:
      overrides[key.strip()] = json.loads(value)
    except json.JSONDecodeError:
      overrides[key.strip()] = value
  return name, overrides


def run_one(data_dir: str, name: str, overrides: dict, model: str,
            seed: int) -> dict:
  config = with_options(TrainConfig(model=model, seed=seed, verbose=0),
                        **overrides)
  check_model_options(config)
  probe = TestByEpoch(data_dir)
  start = time.time()
  with tempfile.TemporaryDirectory() as model_dir:
    trained, logs = train(data_dir, model_dir, config, callbacks=[probe])
    with open(os.path.join(model_dir, "train_config.json")) as f:
      best_epoch = json.load(f)["best_epoch"]
  metrics = score(predict_split(trained, data_dir))
  selected = len(logs["loss"])  # epochs of the selection run; then the refit
  return {"variant": name, "overrides": overrides, "model": model,
          "seed": seed, "test": {k: metrics[k] for k in ("auc", "gauc",
                                                         "logloss")},
          "best_epoch": best_epoch, "test_by_epoch": probe.scores[:selected],
          "test_by_refit_epoch": probe.scores[selected:],
          "logs": {k: [round(x, 5) for x in v] for k, v in logs.items()},
          "seconds": round(time.time() - start, 1)}


def summarise(rows: List[dict]) -> str:
  groups: Dict[tuple, List[dict]] = {}
  for r in rows:
    groups.setdefault((r["variant"], r["model"]), []).append(r)
  lines = ["| variant | model | n | test AUC | test GAUC | logloss | epochs |",
           "|---|---|---|---|---|---|---|"]

  def ms(values):
    if len(values) < 2:
      return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

  for (variant, model), rs in groups.items():
    lines.append(
        f"| {variant} | {model} | {len(rs)} | "
        f"{ms([r['test']['auc'] for r in rs])} | "
        f"{ms([r['test']['gauc'] for r in rs])} | "
        f"{ms([r['test']['logloss'] for r in rs])} | "
        f"{','.join(str(r['best_epoch']) for r in rs)} |")
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", required=True)
  parser.add_argument("--models", default="base,din")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--variant", action="append", default=[],
                      help="NAME[:key=value;...] (repeatable)")
  parser.add_argument("--out", required=True, help="JSON lines, appended")
  parser.add_argument("--summary", action="store_true",
                      help="only print the table of --out")
  args = parser.parse_args(argv)
  done = []
  if os.path.exists(args.out):
    with open(args.out) as f:
      done = [json.loads(line) for line in f if line.strip()]
  if not args.summary:
    keys = {(r["variant"], r["model"], r["seed"]) for r in done}
    for text in args.variant or ["defaults"]:
      name, overrides = parse_variant(text)
      for seed in [int(s) for s in args.seeds.split(",")]:
        for model in args.models.split(","):
          if (name, model, seed) in keys:
            continue
          row = run_one(args.data, name, overrides, model, seed)
          print(json.dumps({k: row[k] for k in
                            ("variant", "model", "seed", "test", "best_epoch",
                             "test_by_epoch", "seconds")}), flush=True)
          with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
          done.append(row)
  print(summarise(done))


if __name__ == "__main__":
  main()
