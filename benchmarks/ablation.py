"""One table of every model option against the defaults, over seeds.

    python benchmarks/ablation.py --data DIR --out runs.jsonl \
        [--seeds 0,1,2] [--lane 0/2] [--write docs/results.md]

Each row below is the model `tfrs-din train` ships with the named options
changed (model constructor arguments, or `TrainConfig` fields), trained on
`--data` exactly as `tfrs-din train` trains it: the schedule is chosen on
held-out training users, the test split is scored once at the end. Rows
already in `--out` (same row name, model and seed) are not run again, so
the sweep resumes, and `--lane i/n` runs every n-th (row, seed) pair so that
n processes can share the work. `--write FILE` replaces the block between
`<!-- ablation -->` and `<!-- /ablation -->` in FILE with the table (mean
+- sd over the seeds present, and each row's test-GAUC difference to the
defaults of its model, seed by seed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(__file__))
from peers import OURS_VARIANTS  # noqa: E402  (NumPy only)

# (row name, model, options changed from the defaults, what it is)
ROWS: List[Tuple[str, str, dict, str]] = [
    ("base", "base", {}, "Embedding&MLP base model, defaults"),
    ("base_mba", "base", {"regularization": "mba"},
     "base model with MBA (lambda 0.01, the paper's) instead of the dense L2"),
    ("din", "din", {}, "DIN, defaults (Dice)"),
    ("din_behaviour_sum", "din", {"tower_behaviour_pooling": "sum"},
     "DIN whose tower gets the behaviour sum s (the official code) instead "
     "of the mean"),
    ("din_mba", "din", {"regularization": "mba"},
     "DIN with MBA (lambda 0.01, the paper's) instead of the dense L2"),
    ("din_prelu", "din", {"activation": "prelu",
                          "attention_activation": "prelu"},
     "DIN with PReLU in the tower and the attention unit"),
    ("din_no_regularization", "din", {"regularization": None},
     "DIN without a penalty on the embeddings"),
    ("din_tower_affine", "din", {"tower_input_normalization": "affine"},
     "DIN with DIEN's affine normalisation of the tower input"),
    ("din_fuxictr_like", "din", OURS_VARIANTS["fuxictr_din"],
     "DIN with FuxiCTR's choices that ours has: no behaviour sum in the "
     "tower, N(0, 1e-4) embeddings, no penalty, Adam on every row"),
    ("dien", "dien", {}, "DIEN, defaults (AUGRU official form, MLP "
     "attention, affine tower input, aux loss over padded steps, fresh "
     "negatives)"),
    ("dien_mba", "dien", {"regularization": "mba"},
     "DIEN with MBA (lambda 0.01, the paper's) instead of the dense L2"),
    ("dien_augru_paper", "dien", {"gru_type": "AUGRU"},
     "AUGRU, paper form u' = a u"),
    ("dien_agru", "dien", {"gru_type": "AGRU"}, "AGRU"),
    ("dien_aigru", "dien", {"gru_type": "AIGRU"}, "AIGRU"),
    ("dien_no_aux", "dien", {"aux_loss_weight": 0.0}, "no auxiliary loss"),
    ("dien_bilinear", "dien", {"attention_type": "bilinear"},
     "paper's bilinear attention h W e"),
    ("dien_no_tower_norm", "dien", {"tower_input_normalization": None},
     "no affine normalisation of the tower input"),
    ("dien_no_behaviour_sum", "dien", {"behaviour_sum_in_tower": False},
     "tower without the behaviour sum and item * sum"),
    ("dien_behaviour_sum", "dien", {"tower_behaviour_pooling": "sum"},
     "tower gets the behaviour sum s (the official code) instead of the "
     "mean"),
    ("dien_attention_pooling_none", "dien",
     {"attention_pooling_in_tower": None},
     "tower without the attention-pooled behaviours (h'_T alone, the "
     "papers')"),
    ("dien_attention_pooling_states", "dien",
     {"attention_pooling_in_tower": "states"},
     "tower gets the attention-pooled interest states instead of the "
     "behaviours"),
    ("dien_step_mean", "dien", {"aux_reduction": "step_mean"},
     "aux loss averaged over valid steps"),
    ("dien_fuxictr_like", "dien", OURS_VARIANTS["fuxictr_dien"],
     "DIEN with FuxiCTR 2.3.10's choices that ours has: the paper's AUGRU, "
     "bilinear attention, no auxiliary loss, the behaviour sum, no "
     "attention-pooled behaviours, no tower-input normalisation, "
     "N(0, 1e-4) embeddings, no penalty, Adam on every row"),
    ("dien_prepared_negatives", "dien", {"aux_negatives": "prepared"},
     "aux negatives drawn once by prepare (uniform)"),
]

BEGIN, END = "<!-- ablation -->", "<!-- /ablation -->"


def pending(done: List[dict], seeds: List[int], lane: Tuple[int, int],
            names: Optional[List[str]] = None):
  """(row, seed) pairs not in `done`, in row order, this lane's share (of
  the rows named in `names`, or of all rows)."""
  unknown = sorted(set(names or ()) - {row[0] for row in ROWS})
  if unknown:
    raise ValueError(f"--rows: no such row {unknown}")
  keys = {(r["variant"], r["model"], r["seed"]) for r in done}
  pairs = [(row, seed) for row in ROWS for seed in seeds
           if not names or row[0] in names]
  index, count = lane
  return [(row, seed) for i, (row, seed) in enumerate(pairs)
          if i % count == index and (row[0], row[1], seed) not in keys]


def mean_sd(values: List[float]) -> str:
  if not values:
    return "—"
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(done: List[dict]) -> str:
  """Markdown table: one line per row of ROWS that has runs."""
  by_row: Dict[str, Dict[int, dict]] = {}
  for r in done:
    by_row.setdefault(r["variant"], {})[r["seed"]] = r
  lines = ["| row | model | what changes | seeds | validation GAUC | "
           "test AUC | test GAUC | test GAUC − defaults (per seed) | epochs |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name, model, _, what in ROWS:
    runs = by_row.get(name)
    if not runs:
      continue
    seeds = sorted(runs)
    val = [max(runs[s]["logs"]["val_gauc"]) for s in seeds
           if runs[s]["logs"].get("val_gauc")]
    reference = by_row.get(model, {})
    deltas = [runs[s]["test"]["gauc"] - reference[s]["test"]["gauc"]
              for s in seeds if s in reference]
    delta = ("" if name == model or not deltas else
             f"{statistics.mean(deltas):+.4f} ("
             + ", ".join(f"{d:+.4f}" for d in deltas) + ")")
    lines.append(
        f"| {name} | {model} | {what} | {len(seeds)} | {mean_sd(val)} | "
        f"{mean_sd([runs[s]['test']['auc'] for s in seeds])} | "
        f"{mean_sd([runs[s]['test']['gauc'] for s in seeds])} | {delta} | "
        f"{','.join(str(runs[s]['best_epoch']) for s in seeds)} |")
  return "\n".join(lines)


def write_block(path: str, text: str) -> None:
  with open(path) as f:
    content = f.read()
  pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
  if not pattern.search(content):
    raise ValueError(f"{path} has no {BEGIN} ... {END} block to replace")
  block = f"{BEGIN}\n{text}\n{END}"
  with open(path, "w") as f:
    f.write(pattern.sub(lambda _: block, content))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", required=True)
  parser.add_argument("--out", required=True, help="JSON lines, appended")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--lane", default="0/1", help="i/n: every n-th run")
  parser.add_argument("--rows", default=None,
                      help="comma-separated row names (default: every row)")
  parser.add_argument("--write", help="markdown file with an ablation block")
  parser.add_argument("--table_only", action="store_true")
  args = parser.parse_args(argv)
  index, count = (int(x) for x in args.lane.split("/"))
  done: List[dict] = []
  if os.path.exists(args.out):
    with open(args.out) as f:
      done = [json.loads(line) for line in f if line.strip()]
  if not args.table_only:
    import seeds  # noqa: E402  (imports TensorFlow)
    for (name, model, overrides, _), seed in pending(
        done, [int(s) for s in args.seeds.split(",")], (index, count),
        args.rows.split(",") if args.rows else None):
      row = seeds.run_one(args.data, name, overrides, model, seed)
      print(json.dumps({k: row[k] for k in ("variant", "model", "seed",
                                            "test", "best_epoch",
                                            "seconds")}), flush=True)
      with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
      done.append(row)
  text = table(done)
  print(text)
  if args.write:
    write_block(args.write, text)


if __name__ == "__main__":
  main()
