"""The `tfrs-din` command line: prepare, train, evaluate, export, run, demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow and Beam load only when a command runs: `--help` stays fast.
from tfrs_din._suggest import did_you_mean  # noqa: E402
from tfrs_din.training.config import (AUX_NEGATIVES, MODEL_NAMES,  # noqa: E402
                                      MONITORS, OPTIMIZERS, STRATEGIES,
                                      TrainConfig, load_config_file,
                                      parse_model_options)

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


class _QuietImports(logging.Filter):
  """Drops the root logger's import-time notices of optional Beam and
  TensorFlow backends that this program does not use (Google Cloud
  clients), which read as errors to a user."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("apitools not found")


def _boolean(text: str) -> bool:
  if text.lower() in ("1", "true", "yes"):
    return True
  if text.lower() in ("0", "false", "no"):
    return False
  raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _model_options(text: str) -> Dict[str, Any]:
  try:
    return parse_model_options(text)
  except ValueError as error:
    raise argparse.ArgumentTypeError(str(error))


# TrainConfig field -> (type, choices, help). Each flag's default is shown
# from `TrainConfig`; the parser's default is None, so that a flag given
# explicitly overrides --config and one left out does not.
_TRAINING_FLAGS = {
    "epochs": (int, None, "at most this many epochs (validation stops "
               "earlier)"),
    "validation_fraction": (float, None, "share of the training users held "
                            "out to choose the number of epochs; 0 trains "
                            "--epochs epochs on every user"),
    "monitor": (str, tuple(MONITORS), "validation metric that chooses the "
                "epoch"),
    "patience": (int, None, "epochs without improvement before stopping"),
    "refit": (_boolean, None, "after choosing the epoch, train a fresh model "
              "on every training user for that many epochs"),
    "batch_size": (int, None, "examples per training step"),
    "learning_rate": (float, None, "of the optimizer"),
    "optimizer": (str, OPTIMIZERS, "lazy_adam updates only the embedding rows "
                  "in the batch (and applies the lazy L2)"),
    "aux_negatives": (str, AUX_NEGATIVES, "DIEN's auxiliary negatives: fresh "
                      "ones drawn per batch and epoch (never an item of the "
                      "row's history), or those prepare wrote"),
    "aux_negative_power": (float, None, "with fresh negatives, P(item) ~ "
                           "count ** power (1: popularity, 0: uniform)"),
    "shuffle_buffer": (int, None, "training records the shuffle holds "
                       "(default: enough for a split of a million records)"),
    "strategy": (str, STRATEGIES, "tf.distribute strategy"),
    "steps_per_epoch": (int, None, "steps per epoch (default: the whole "
                        "training split)"),
    "verbose": (int, (0, 1, 2), "Keras' progress output: 0 none, 1 a bar, 2 "
                "a line per epoch"),
}
# Flags shared with `prepare` in `run` (its own --embedding_dim, ... serve
# both steps).
_DATA_FLAGS = {
    "embedding_dim": (int, None, "override the embedding width (default: "
                      "the prepared data's)"),
    "max_history": (int, None, "keep fewer (the most recent) behaviours "
                    "(default: all the prepared data keeps)"),
    "seed": (int, None, "seed of initialisation, shuffles and the holdout"),
}


def _add_training_options(parser: argparse.ArgumentParser,
                          shared_with_prepare: bool = False) -> None:
  """Training flags; with `shared_with_prepare`, the Beam job's
  --embedding_dim, --max_history and --seed serve both steps."""
  defaults = TrainConfig()
  flags = dict(_TRAINING_FLAGS)
  if not shared_with_prepare:
    flags.update(_DATA_FLAGS)
  parser.add_argument(
      "--model_options", type=_model_options, metavar="KEY=VALUE,...",
      help="arguments of the model's constructor (tfrs_din.models), e.g. "
      "gru_units=24,mlp_units=[200,80]; 'dien.gru_units=24' applies to one "
      "model only (default: the constructor's defaults, the tuned model)")
  parser.add_argument(
      "--config", metavar="FILE",
      help="JSON or YAML file of these options (names without --, and "
      "model_options as a mapping); flags given here override it")
  for name, (kind, choices, text) in flags.items():
    default = getattr(defaults, name)
    shown = "" if "default:" in text else f" (default: {default})"
    parser.add_argument(f"--{name}", type=kind, choices=choices,
                        help=text + shown)


def _train_config(args, model: Optional[str]) -> TrainConfig:
  """TrainConfig defaults <- --config file <- flags given explicitly (and
  `model`, when not None)."""
  values: Dict[str, Any] = {}
  if getattr(args, "config", None):
    values.update(load_config_file(args.config))
  options = dict(values.get("model_options") or {})
  options.update(getattr(args, "model_options", None) or {})
  values["model_options"] = options
  for name in (*_TRAINING_FLAGS, *_DATA_FLAGS):
    value = getattr(args, name, None)
    if value is not None:
      values[name] = value
  if model is not None:
    values["model"] = model
  return TrainConfig(**values)


def _models(text: str) -> List[str]:
  names = [m.strip() for m in text.split(",") if m.strip()]
  unknown = [m for m in names if m not in MODEL_NAMES]
  if unknown or not names:
    raise argparse.ArgumentTypeError(
        f"--models takes a comma-separated subset of base,din,dien, got {text!r}")
  return names


def build_parser() -> argparse.ArgumentParser:
  from beam_jobs.options import add_arguments  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog="tfrs-din", description="DIN and DIEN click-through-rate models for "
      "TensorFlow Recommenders: prepare data with Apache Beam, train, evaluate "
      "and export for TF Serving.")
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--debug", action="store_true",
                      help="show the whole traceback of an error")
  sub = parser.add_subparsers(dest="command", required=True)

  def command(name: str, text: str) -> argparse.ArgumentParser:
    # No abbreviations: a prefix of a flag would be taken for it, and one of
    # a Beam option for ours.
    return sub.add_parser(name, help=text, description=text,
                          parents=[common], allow_abbrev=False)

  p = command("prepare", "run the Beam job on an interaction log")
  add_arguments(p)

  p = command("train", "train base, din or dien on prepared data")
  p.add_argument("--data", required=True, help="output directory of prepare")
  p.add_argument("--model", choices=MODEL_NAMES,
                 help="the model to train; --config may name it (default: din)")
  p.add_argument("--model_dir", required=True,
                 help="where the model, its checkpoints and logs go")
  _add_training_options(p)

  p = command("evaluate", "AUC, GAUC, logloss, RelaImpr of a model")
  p.add_argument("--data", required=True, help="output directory of prepare")
  p.add_argument("--model_dir", required=True, help="a trained model")
  p.add_argument("--base_model_dir", help="base run for RelaImpr")
  p.add_argument("--output", help="write the metrics here as JSON")

  p = command("export", "SavedModel for TF Serving")
  p.add_argument("--model_dir", required=True, help="a trained model")
  p.add_argument("--export_dir", help="default: MODEL_DIR/export")
  p.add_argument("--version", type=int, help="default: Unix time")
  p.add_argument("--data", help="prepared data whose vocabularies and item "
                 "table the raw-id signatures use (default: the data the "
                 "model was trained on, from MODEL_DIR/train_config.json)")
  p.add_argument("--index_only", action="store_true",
                 help="only signatures that take vocabulary indices")
  p.add_argument("--jit_compile", action="store_true",
                 help="compile score_candidates with XLA (TF Serving then "
                 "needs --xla_cpu_compilation_enabled=true)")
  p.add_argument("--reference_scoring", action="store_true",
                 help="score_candidates through model.score_candidates "
                 "instead of the fast inference scorer")

  p = command("run", "prepare, train, evaluate and export models on your own "
              "log; writes OUTPUT/metrics.json")
  add_arguments(p)
  p.add_argument("--models", type=_models, default=list(MODEL_NAMES),
                 help="comma-separated models to train (default: "
                 "base,din,dien)")
  _add_training_options(p, shared_with_prepare=True)

  command("build-kernels", "compile DIEN's fused GRU kernels now (once per "
          "machine) instead of in the first training")

  p = command("demo", "the whole job on a built-in synthetic log")
  p.add_argument("--output", default="tfrs-din-demo",
                 help="output directory (default: tfrs-din-demo)")
  p.add_argument("--epochs", type=int, help="override the demo's epochs")
  parser.commands = sub.choices  # name -> its parser
  return parser


def _build_kernels() -> int:
  """`tfrs-din build-kernels`: compiles (or finds) the fused GRU kernels."""
  import time  # pylint: disable=g-import-not-at-top
  from tfrs_din.ops import packed_gru  # pylint: disable=g-import-not-at-top
  cached = packed_gru.built_library()
  if cached is not None:
    print(f"fused GRU kernels already built: {cached}")
    return 0
  start = time.monotonic()
  try:
    path = packed_gru.library_path()
  except RuntimeError as error:
    print(f"tfrs-din build-kernels: {str(error).splitlines()[0]}; DIEN will "
          "run its GRUs as TensorFlow ops (slower).", file=sys.stderr)
    return 1
  print(f"built fused GRU kernels in {time.monotonic() - start:.0f} s: {path}")
  return 0


def _models_to_train(args) -> Sequence[str]:
  if args.command == "train":
    return [args.model]
  if args.command == "run":
    return args.models
  return ["dien"] if args.command == "demo" else []


@contextlib.contextmanager
def _quiet_native_stderr():
  """Sends what native code writes to stderr to /dev/null meanwhile.

  TensorFlow's libraries log a line per library on import, and its device
  probe another ("Could not find cuda drivers", "failed call to cuInit",
  written before its log level applies), which read as errors on a CPU
  machine. Python's own errors are raised, not written, so
  nothing a user needs is lost.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def _command(args, beam_argv: Sequence[str]) -> int:
  if not args.debug:
    with _quiet_native_stderr():
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.config.list_physical_devices()  # the devices' probe logs here too
  if args.command == "build-kernels":
    return _build_kernels()
  from tfrs_din import training  # pylint: disable=g-import-not-at-top
  if "dien" in _models_to_train(args):
    from tfrs_din.ops import packed_gru  # pylint: disable=g-import-not-at-top
    packed_gru.build_in_background()  # overlaps prepare and the other models
  from tfrs_din.training import workflow  # pylint: disable=g-import-not-at-top
  if args.command == "prepare":
    workflow.prepare_parsed(args, beam_argv)
  elif args.command == "train":
    training.train(args.data, args.model_dir, _train_config(args, args.model))
  elif args.command == "evaluate":
    base = None
    if args.base_model_dir:
      base = training.evaluate(
          training.load_model(args.base_model_dir, args.data), args.data)
    metrics = training.evaluate(training.load_model(args.model_dir, args.data),
                                args.data, base)
    print(json.dumps(metrics, indent=2))
    if args.output:
      with open(args.output, "w") as f:
        json.dump(metrics, f, indent=2)
  elif args.command == "export":
    from tfrs_din.serving.export import export_saved_model, trained_data_dir  # pylint: disable=g-import-not-at-top
    data_dir = None if args.index_only else (
        args.data or trained_data_dir(args.model_dir))
    path = export_saved_model(training.load_model(args.model_dir, data_dir),
                              args.export_dir or
                              os.path.join(args.model_dir, "export"),
                              args.version, data_dir=data_dir,
                              fast_scoring=not args.reference_scoring,
                              jit_compile=args.jit_compile)
    print(path)
  elif args.command == "run":
    config = _train_config(args, args.models[0])
    config.check()  # refused before the Beam job, not after it
    training.trainer.check_model_options(config, args.models)
    workflow.prepare_parsed(args, beam_argv)
    results = workflow.train_evaluate_export(
        args.output, args.output, args.models, config)
    print("\n" + workflow.format_table(results))
    print(f"\nmetrics: {os.path.join(args.output, 'metrics.json')}")
  elif args.command == "demo":
    from tfrs_din.demo import run_demo  # pylint: disable=g-import-not-at-top
    run_demo(args.output, args.epochs)
  return 0


def _unknown_flags(parser: argparse.ArgumentParser, command: str,
                   unknown: Sequence[str]) -> List[str]:
  """The flags of `unknown` that go to Beam (`prepare` and `run` pass the
  options Beam's pipeline options define); raises ValueError, one line,
  for any other, naming the closest known flag."""
  if not unknown:
    return []
  usage = parser.commands[command].format_usage()
  known = sorted(set(re.findall(r"--[a-z][a-z0-9_]*", usage)))
  if command in ("prepare", "run"):
    from beam_jobs.prepare import split_beam_args  # pylint: disable=g-import-not-at-top
    _, beam_args = split_beam_args(unknown, other_flags=known)
    return beam_args
  name = unknown[0].split("=", 1)[0]
  if not name.startswith("-"):
    raise ValueError(f"unexpected argument {name!r}")
  raise ValueError(f"unknown flag {name}" + (
      did_you_mean(name, known) or f"; see tfrs-din {command} --help"))


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.getLogger().addFilter(_QuietImports())
  parser = build_parser()
  args, unknown = parser.parse_known_args(argv)
  try:
    return _command(args, _unknown_flags(parser, args.command, unknown))
  except USER_ERRORS as error:
    if args.debug:
      raise
    message = str(error).strip().splitlines()
    print(f"tfrs-din {args.command}: error: "
          f"{message[0] if message else type(error).__name__} (--debug shows "
          "the traceback)", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"tfrs-din {args.command}: interrupted; `train` resumes from its last "
          "checkpoint when run again", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
