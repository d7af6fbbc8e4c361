"""The `tfrs-din` command line: prepare, train, evaluate, export, run, demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (importing tfrs_din sets up Keras 2 first)
from tfrs_din.training.distribute import STRATEGIES  # noqa: E402
from tfrs_din.training.optimizers import DEFAULT_ROW_L2_EVERY  # noqa: E402
from tfrs_din.training import TrainConfig  # noqa: E402
from tfrs_din.layers.attention_gru import GRU_TYPES  # noqa: E402
from tfrs_din.layers.interest_extractor import AUX_REDUCTIONS  # noqa: E402
from tfrs_din.models.dien import ATTENTIONS  # noqa: E402

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def _units(text: str):
  try:
    return tuple(int(x) for x in text.split(",") if x.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated integers such as 200,80, got {text!r}")


def _boolean(text: str) -> bool:
  if text.lower() in ("1", "true", "yes"):
    return True
  if text.lower() in ("0", "false", "no"):
    return False
  raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_training_options(parser: argparse.ArgumentParser,
                          shared_with_prepare: bool = False) -> None:
  """Training flags; with `shared_with_prepare`, the Beam job's --embedding_dim,
  --max_history and --seed serve both steps."""
  d = TrainConfig()
  a = parser.add_argument
  a("--epochs", type=int, default=d.epochs,
    help="at most this many epochs (fewer when validation stops early)")
  a("--validation_fraction", type=float, default=d.validation_fraction,
    help="share of training users held out to choose the epoch; 0 trains "
    "--epochs epochs on every user")
  a("--validation", choices=["auto", "users", "last"], default=d.validation,
    help="held out to choose the epoch: whole users (--validation_fraction "
    "of them, the default), or every user's last training target (as "
    "next_item's test split); auto: last for next_item data, users "
    "otherwise")
  a("--monitor", choices=["gauc", "auc", "logloss", "loss"], default=d.monitor,
    help="validation metric that early stopping follows")
  a("--patience", type=int, default=d.patience,
    help="epochs without improvement before stopping")
  a("--refit", type=_boolean, default=d.refit,
    help="after choosing the epoch, train a fresh model on every training "
    "user for that many epochs (default true)")
  a("--batch_size", type=int, default=d.batch_size)
  a("--learning_rate", type=float, default=d.learning_rate)
  if not shared_with_prepare:
    a("--embedding_dim", type=int, help="override the width set by prepare")
    a("--max_history", type=int, help="keep fewer (most recent) behaviours")
    a("--seed", type=int, default=d.seed)
  a("--mlp_units", type=_units, default=d.mlp_units)
  a("--activation", default=d.activation, help="dice, prelu, relu, ...")
  a("--dropout", type=float, default=d.dropout)
  a("--regularization", choices=["auto", "l2", "lazy_l2", "mba", "none"],
    default=d.regularization,
    help="embedding penalty: l2 (every row, each step: chosen on "
    "validation), lazy_l2 (the shrinkage l2 gets from Adam, applied to all "
    f"rows every {DEFAULT_ROW_L2_EVERY} steps: O(batch) steps for tables of "
    "millions of rows), "
    "mba (DIN's mini-batch aware L2: only the batch's rows); auto (the "
    "default): l2 up to 250,000 embedding rows, lazy_l2 above")
  a("--l2", type=float, default=d.l2,
    help="lambda of --regularization (default 1e-3 for l2 and lazy_l2, "
    "0.01 for mba)")
  a("--pooling", choices=["sum", "mean"], default=d.pooling, help="base model")
  a("--attention_units", type=_units, default=d.attention_units)
  a("--attention_activation", default=d.attention_activation)
  a("--attention_normalization", choices=["none", "softmax"], default="none")
  a("--attention_padded_statistics", type=_boolean,
    default=d.attention_padded_statistics,
    help="DIN: Dice statistics of the activation unit also over padded "
    "positions, as FuxiCTR and DeepCTR-Torch compute them")
  a("--attention_initial_weight", type=float,
    default=d.attention_initial_weight,
    help="DIN: w0 added to every attention weight (1.0: the pooling starts "
    "as sum pooling)")
  a("--behaviour_sum_in_tower", choices=["auto", "true", "false"],
    default="auto",
    help="also feed the tower the behaviour sum s and item * s (auto: DIN "
    "and DIEN yes, base no, as the official code)")
  a("--tower_behaviour_pooling", choices=["sum", "mean"],
    default=d.tower_behaviour_pooling,
    help="the behaviour summary s fed to the tower: sum (the official code) "
    "or mean of the valid behaviours (a scale independent of the history "
    "length)")
  a("--tower_input_normalization", choices=["auto", "none", "batch", "affine"],
    default=d.tower_input_normalization,
    help="normalise the tower input: batch (BatchNormalization) or affine "
    "(what the official code's batch_normalization runs: a learned "
    "per-feature scale and shift); auto: affine for dien, none otherwise")
  a("--embedding_stddev", type=float, default=d.embedding_stddev,
    help="stddev of the normal initializer of the embedding tables")
  a("--kernel_initializer", default=d.kernel_initializer,
    help="dense kernels of the tower and attention nets")
  a("--adam_epsilon", type=float, default=d.adam_epsilon)
  a("--adam_adaptive_epsilon", type=_boolean, default=d.adam_adaptive_epsilon,
    help="epsilon added after bias correction, as in PyTorch")
  a("--gru_units", type=int, default=d.gru_units)
  a("--gru_type", choices=list(GRU_TYPES), default=d.gru_type)
  a("--aux_loss_weight", type=float, default=d.aux_loss_weight)
  a("--aux_loss_reduction", choices=list(AUX_REDUCTIONS),
    default=d.aux_loss_reduction,
    help="DIEN's auxiliary loss: mean over valid steps, the paper's sum over "
    "each user's steps, or the official code's mean over padded steps")
  a("--dien_attention", choices=list(ATTENTIONS), default=d.dien_attention,
    help="DIEN's attention: the paper's bilinear h W e, or the official "
    "code's MLP")
  a("--dien_attention_initializer", choices=["glorot_uniform", "identity"],
    default=d.dien_attention_initializer,
    help="initializer of the bilinear attention's W (default Glorot "
    "uniform); identity starts it as h . e, as FuxiCTR does")
  a("--optimizer", choices=["lazy_adam", "adam", "sgd"], default=d.optimizer,
    help="lazy_adam updates only the embedding rows in the batch")
  a("--strategy", choices=STRATEGIES, default=d.strategy)
  a("--steps_per_epoch", type=int)
  a("--verbose", type=int, default=d.verbose, choices=[0, 1, 2])
  # Data options (issue 13).
  a("--aux_negatives", choices=["prepared", "fresh"], default=d.aux_negatives,
    help="DIEN's auxiliary negatives: those prepare wrote (the same every "
    "epoch) or fresh ones drawn per batch and epoch, never an item of the "
    "row's history (needs item_table.tsv)")
  a("--aux_negative_power", type=float, default=d.aux_negative_power,
    help="with --aux_negatives fresh: P(item) ~ count ** power (1 = "
    "popularity as in the official DIEN code, 0 = uniform)")
  a("--mba_counts", choices=["events", "samples"], default=d.mba_counts,
    help="n_j of MBA: events holding id j (the vocabulary counts) or "
    "training samples holding it (DIN paper, eq. 4; one pass over the data)")
  a("--shuffle_buffer", type=int, default=d.shuffle_buffer,
    help="training records the shuffle holds: a split up to this size is "
    "shuffled whole (memory ~ this many records)")


def _train_config(args, model: str) -> TrainConfig:
  none = lambda v: None if v == "none" else v
  return TrainConfig(
      model=model, epochs=args.epochs,
      validation_fraction=args.validation_fraction,
      validation=args.validation, monitor=args.monitor,
      patience=args.patience, refit=args.refit, batch_size=args.batch_size,
      learning_rate=args.learning_rate, embedding_dim=args.embedding_dim,
      max_history=args.max_history, mlp_units=args.mlp_units,
      activation=args.activation, dropout=args.dropout,
      regularization=none(args.regularization), l2=args.l2,
      pooling=args.pooling, attention_units=args.attention_units,
      attention_activation=args.attention_activation,
      attention_normalization=none(args.attention_normalization),
      attention_padded_statistics=args.attention_padded_statistics,
      attention_initial_weight=args.attention_initial_weight,
      gru_units=args.gru_units, gru_type=args.gru_type,
      aux_loss_weight=args.aux_loss_weight,
      aux_loss_reduction=args.aux_loss_reduction,
      dien_attention=args.dien_attention,
      dien_attention_initializer=args.dien_attention_initializer,
      tower_input_normalization=none(args.tower_input_normalization),
      behaviour_sum_in_tower={"auto": None, "true": True, "false": False}[
          args.behaviour_sum_in_tower],
      tower_behaviour_pooling=args.tower_behaviour_pooling,
      embedding_stddev=args.embedding_stddev,
      kernel_initializer=args.kernel_initializer,
      adam_epsilon=args.adam_epsilon,
      adam_adaptive_epsilon=args.adam_adaptive_epsilon,
      optimizer=args.optimizer,
      strategy=args.strategy,
      steps_per_epoch=args.steps_per_epoch, seed=args.seed,
      verbose=args.verbose,
      aux_negatives=args.aux_negatives,
      aux_negative_power=args.aux_negative_power,
      mba_counts=args.mba_counts, shuffle_buffer=args.shuffle_buffer)


def _models(text: str) -> List[str]:
  names = [m.strip() for m in text.split(",") if m.strip()]
  unknown = [m for m in names if m not in ("base", "din", "dien")]
  if unknown or not names:
    raise argparse.ArgumentTypeError(
        f"--models takes a comma-separated subset of base,din,dien, got {text!r}")
  return names


def build_parser() -> argparse.ArgumentParser:
  from beam_jobs.prepare import add_arguments  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog="tfrs-din", description="DIN and DIEN click-through-rate models for "
      "TensorFlow Recommenders: prepare data with Apache Beam, train, evaluate "
      "and export for TF Serving.")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("prepare", help="run the Beam job on an interaction log")
  add_arguments(p)

  p = sub.add_parser("train", help="train base, din or dien on prepared data")
  p.add_argument("--data", required=True, help="output directory of prepare")
  p.add_argument("--model", choices=["base", "din", "dien"], default="din")
  p.add_argument("--model_dir", required=True)
  _add_training_options(p)

  p = sub.add_parser("evaluate", help="AUC, GAUC, logloss, RelaImpr of a model")
  p.add_argument("--data", required=True)
  p.add_argument("--model_dir", required=True)
  p.add_argument("--base_model_dir", help="base run for RelaImpr")
  p.add_argument("--output", help="write the metrics here as JSON")

  p = sub.add_parser("export", help="SavedModel for TF Serving")
  p.add_argument("--model_dir", required=True)
  p.add_argument("--export_dir", help="default: MODEL_DIR/export")
  p.add_argument("--version", type=int, help="default: Unix time")
  p.add_argument("--data", help="prepared data whose vocabularies and item "
                 "table the raw-id signatures use (default: the data the "
                 "model was trained on, from MODEL_DIR/train_config.json)")
  p.add_argument("--index_only", action="store_true",
                 help="only signatures that take vocabulary indices")
  p.add_argument("--jit_compile", action="store_true",
                 help="compile score_candidates with XLA (about 2x faster; TF "
                 "Serving then needs --xla_cpu_compilation_enabled=true)")
  p.add_argument("--reference_scoring", action="store_true",
                 help="score_candidates through model.score_candidates "
                 "instead of the fast inference scorer")

  p = sub.add_parser("run", help="prepare, train, evaluate and export models "
                     "on your own log; writes OUTPUT/metrics.json")
  add_arguments(p)
  p.add_argument("--models", type=_models, default=["base", "din", "dien"])
  _add_training_options(p, shared_with_prepare=True)

  sub.add_parser("build-kernels", help="compile DIEN's fused GRU kernels now "
                 "(once per machine, ~40 s) instead of in the first training")

  p = sub.add_parser("demo", help="the whole job on a built-in synthetic log")
  p.add_argument("--output", default="tfrs-din-demo")
  p.add_argument("--epochs", type=int, help="override the demo's epochs")
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


def _command(args, beam_argv: Sequence[str]) -> int:
  if args.command == "build-kernels":
    return _build_kernels()
  from tfrs_din import training  # pylint: disable=g-import-not-at-top
  if "dien" in _models_to_train(args):
    from tfrs_din.ops import packed_gru  # pylint: disable=g-import-not-at-top
    packed_gru.build_in_background()  # overlaps prepare and the other models
  from tfrs_din.training import workflow  # pylint: disable=g-import-not-at-top
  if args.command == "prepare":
    workflow.prepare(_prepare_argv(args) + list(beam_argv))
  elif args.command == "train":
    training.train(args.data, args.model_dir, _train_config(args, args.model))
  elif args.command == "evaluate":
    base = None
    if args.base_model_dir:
      base = training.evaluate(training.load_model(args.base_model_dir),
                               args.data)
    metrics = training.evaluate(training.load_model(args.model_dir), args.data,
                                base)
    print(json.dumps(metrics, indent=2))
    if args.output:
      with open(args.output, "w") as f:
        json.dump(metrics, f, indent=2)
  elif args.command == "export":
    from tfrs_din.serving.export import export_saved_model, trained_data_dir  # pylint: disable=g-import-not-at-top
    data_dir = None if args.index_only else (
        args.data or trained_data_dir(args.model_dir))
    path = export_saved_model(training.load_model(args.model_dir),
                              args.export_dir or
                              os.path.join(args.model_dir, "export"),
                              args.version, data_dir=data_dir,
                              fast_scoring=not args.reference_scoring,
                              jit_compile=args.jit_compile)
    print(path)
  elif args.command == "run":
    workflow.prepare(_prepare_argv(args) + list(beam_argv))
    results = workflow.train_evaluate_export(
        args.output, args.output, args.models, _train_config(args, "din"))
    print("\n" + workflow.format_table(results))
    print(f"\nmetrics: {os.path.join(args.output, 'metrics.json')}")
  elif args.command == "demo":
    from tfrs_din.demo import run_demo  # pylint: disable=g-import-not-at-top
    run_demo(args.output, args.epochs)
  return 0


def _prepare_argv(args) -> List[str]:
  """Re-serialises the parsed Beam-job options for `beam_jobs.prepare`."""
  from beam_jobs.prepare import add_arguments  # pylint: disable=g-import-not-at-top
  probe = argparse.ArgumentParser()
  add_arguments(probe)
  argv = []
  for action in probe._actions:  # pylint: disable=protected-access
    if not action.option_strings or action.dest == "help":
      continue
    value = getattr(args, action.dest, None)
    flag = action.option_strings[0]
    if isinstance(action, argparse._StoreTrueAction):  # pylint: disable=protected-access
      argv += [flag] if value else []
    elif value is not None:
      argv += [flag, str(value)]
  return argv


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = build_parser()
  args, beam_argv = parser.parse_known_args(argv)
  if beam_argv and args.command not in ("prepare", "run"):
    parser.error(f"unrecognized arguments: {' '.join(beam_argv)}")
  try:
    return _command(args, beam_argv)
  except USER_ERRORS as error:
    print(f"tfrs-din {args.command}: error: {error}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"tfrs-din {args.command}: interrupted; `train` resumes from its last "
          "checkpoint when run again", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
