"""Base / DIN / DIEN on MovieLens-100k (from the `recbole` wheel, MIT licence).

  python benchmarks/movielens.py [--seeds 0,1,2] [--epochs 3]

Two protocols (SPEC sections 8 and 10), both prepared by the Beam job:
  * movielens: ratings >= 4 are positives, every rating after the user's first
    positive is a sample with the earlier positives as history; users are
    split into train and test (the DIN paper's MovieLens protocol);
  * next_item: positives only, Amazon style; train samples predict b_{k+1}
    from b_1..b_k, the test sample predicts b_n; one sampled negative each.
Prints a table of AUC / GAUC / RelaImpr (mean and spread over seeds),
beside the papers' numbers; `--output FILE` also writes it there.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".bench")
WHEEL = "recbole==1.2.1"


def fetch_movielens(cache: str = CACHE) -> tuple:
  """Writes events.csv and items.csv from the recbole wheel; returns paths."""
  os.makedirs(cache, exist_ok=True)
  events, items = os.path.join(cache, "ml100k_events.csv"), os.path.join(
      cache, "ml100k_items.csv")
  if os.path.exists(events) and os.path.exists(items):
    return events, items
  wheels = [f for f in os.listdir(cache) if f.startswith("recbole-")]
  if not wheels:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                    WHEEL, "-d", cache], check=True)
    wheels = [f for f in os.listdir(cache) if f.startswith("recbole-")]
  with zipfile.ZipFile(os.path.join(cache, wheels[0])) as wheel:
    base = "recbole/dataset_example/ml-100k/ml-100k"
    inter = wheel.read(base + ".inter").decode("utf-8")
    item = wheel.read(base + ".item").decode("utf-8")
  rows = list(csv.reader(io.StringIO(inter), delimiter="\t"))
  with open(events, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["user_id", "item_id", "rating", "timestamp"])
    writer.writerows(rows[1:])
  rows = list(csv.reader(io.StringIO(item), delimiter="\t"))
  header = [h.split(":")[0] for h in rows[0]]
  with open(items, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["item_id", "category_id"])
    for row in rows[1:]:
      record = dict(zip(header, row))
      genres = record.get("class", "").split()
      writer.writerow([record["item_id"], genres[0] if genres else "unknown"])
  return events, items


PAPER = """Published numbers for context (different data sizes and splits; see SPEC
section 9): DIN paper, MovieLens (user-weighted AUC): BaseModel 0.7300, DIN
0.7337, DIN with Dice 0.7348. DIEN paper, Amazon Electronics (AUC): BaseModel
0.7435, DIN 0.7603, DIEN 0.7792."""


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--protocols", default="movielens,next_item")
  parser.add_argument("--output", help="also write the table to this file")
  args = parser.parse_args()
  sys.path.insert(0, ROOT)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  from tfrs_din import training
  from tfrs_din.training.workflow import prepare

  events, items = fetch_movielens()
  seeds = [int(s) for s in args.seeds.split(",")]
  # Official DIEN sizes: embedding 18, GRU 36, MLP 200-80, Adam.
  config = training.TrainConfig(epochs=args.epochs, batch_size=128,
                                learning_rate=1e-3, verbose=0,
                                model_options={"regularization": "mba"})
  tables = {}
  for protocol in args.protocols.split(","):
    data_dir = os.path.join(CACHE, f"ml100k_{protocol}")
    prep = ["--events", events, "--items", items, "--output", data_dir,
            "--rating_column", "rating", "--max_history", "50",
            "--embedding_dim", "18", "--overwrite"]
    prep += (["--protocol", "labeled", "--test_fraction", "0.2"]
             if protocol == "movielens" else ["--protocol", "next_item"])
    metadata = prepare(prep)
    runs = {m: [] for m in ("base", "din", "dien")}
    for seed in seeds:
      base = None
      for name in ("base", "din", "dien"):
        cfg = training.trainer.config_for(
            dataclasses.replace(config, seed=seed), name)
        model_dir = os.path.join(CACHE, "models", protocol, f"{name}_{seed}")
        if os.path.exists(model_dir):
          import shutil
          shutil.rmtree(model_dir)
        model, _ = training.train(data_dir, model_dir, cfg)
        metrics = training.evaluate(model, data_dir, base)
        base = metrics if name == "base" else base
        runs[name].append(metrics)
        print(f"[movielens] {protocol} seed={seed} {name}: "
              f"auc={metrics['auc']:.4f} gauc={metrics['gauc']:.4f}", flush=True)
    tables[protocol] = (metadata["counts"], runs)

  lines = ["# Results", "",
           "Produced by `python benchmarks/movielens.py` "
           f"(seeds {args.seeds}, {args.epochs} epochs, embedding 18, attention "
           "80-40, GRU 36, MLP 200-80, Dice, MBA, batch 128, LazyAdam 1e-3). "
           "Mean ± standard deviation over seeds; RelaImpr on GAUC against the "
           "base model of the same seed.", ""]
  for protocol, (counts, runs) in tables.items():
    lines += [f"## MovieLens-100k, {protocol} protocol", "",
              f"Samples: train {counts['samples_train']}, test "
              f"{counts['samples_test']}; events used {counts['events_used']}, "
              f"rejected {counts['events_rejected']}.", "",
              "| model | AUC | GAUC | logloss | RelaImpr (GAUC) |",
              "|---|---|---|---|---|"]
    for name, results in runs.items():
      def stat(key):
        values = [r[key] for r in results if key in r]
        return (f"{np.mean(values):.4f} ± {np.std(values):.4f}"
                if values else "—")
      rel = ([r["rela_impr"] for r in results if "rela_impr" in r])
      rel_text = f"{np.mean(rel):+.2f}% ± {np.std(rel):.2f}" if rel else "—"
      lines.append(f"| {name} | {stat('auc')} | {stat('gauc')} | "
                   f"{stat('logloss')} | {rel_text} |")
    lines.append("")
  lines += [PAPER, ""]
  if args.output:
    with open(args.output, "w") as f:
      f.write("\n".join(lines))
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
