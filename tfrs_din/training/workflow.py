"""prepare -> train -> evaluate -> export for several models (`tfrs-din run`)."""

from __future__ import annotations

import json
import os
from typing import Dict, Sequence

from tfrs_din.serving.export import export_saved_model
from tfrs_din.training.config import TrainConfig
from tfrs_din.training.trainer import (check_model_options, config_for,
                                       evaluate, train)


def prepare(beam_argv: Sequence[str]) -> dict:
  """Runs the Beam job with `beam_jobs.prepare` command-line arguments."""
  from beam_jobs import prepare as job  # pylint: disable=g-import-not-at-top
  args, beam_args = job.parse_args(list(beam_argv))
  return prepare_parsed(args, beam_args)


def prepare_parsed(args, beam_args: Sequence[str]) -> dict:
  """Runs the Beam job with parsed job options (the attributes that
  `beam_jobs.options.add_arguments` defines) and Beam's arguments."""
  from beam_jobs import prepare as job  # pylint: disable=g-import-not-at-top
  print(f"[prepare] {args.events} -> {args.output} (Apache Beam)", flush=True)
  metadata = job.run(job.config_from_args(args), list(beam_args))
  c = metadata["counts"]
  print(f"[prepare] events read {c['events_read']}, used {c['events_used']}, "
        f"rejected {c['events_rejected']} (see dead_letter/); samples train "
        f"{c['samples_train']}, test {c['samples_test']}", flush=True)
  return metadata


def train_evaluate_export(data_dir: str, output: str, models: Sequence[str],
                          base_config: TrainConfig, export: bool = True) -> Dict[str, Dict[str, float]]:
  """Trains each model, scores it (RelaImpr against "base" when trained) and
  exports it; writes and returns `output/metrics.json`. Each model takes
  the model options of `base_config` that apply to it (`config_for`)."""
  check_model_options(base_config, models)
  ordered = sorted(models, key=lambda m: m != "base")  # base first
  results: Dict[str, Dict[str, float]] = {}
  for name in ordered:
    config = config_for(base_config, name)
    model_dir = os.path.join(output, "models", name)
    print(f"[train] {name} -> {model_dir}", flush=True)
    model, _ = train(data_dir, model_dir, config)
    results[name] = evaluate(model, data_dir, results.get("base"))
    print(f"[evaluate] {name}: " + ", ".join(
        f"{k}={v:.4f}" for k, v in results[name].items()
        if isinstance(v, float)), flush=True)
    if export:
      path = export_saved_model(model, os.path.join(output, "export", name),
                                data_dir=data_dir)  # raw-id signatures
      results[name]["export"] = path
      print(f"[export] {name} -> {path}", flush=True)
  with open(os.path.join(output, "metrics.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  return results


def format_table(results: Dict[str, Dict[str, float]]) -> str:
  lines = [f"{'model':<8} {'AUC':>8} {'GAUC':>8} {'logloss':>8} {'RelaImpr':>9}"]
  for name, m in results.items():
    rel = m.get("rela_impr")
    lines.append(f"{name:<8} {m['auc']:>8.4f} {m['gauc']:>8.4f} "
                 f"{m['logloss']:>8.4f} "
                 f"{'' if rel is None else f'{rel:+8.2f}%':>9}")
  return "\n".join(lines)
