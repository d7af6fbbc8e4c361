"""The prepare job's command-line flags.

Apart from the job (`beam_jobs.prepare`, which imports Apache Beam), so that
`tfrs-din --help` and flag errors need neither Beam nor TensorFlow.
"""

from __future__ import annotations

import argparse

# How samples are cut from each user's events (`beam_jobs.samples`).
PROTOCOLS = ("next_item", "labeled")


class _Parser(argparse.ArgumentParser):
  """Raises ValueError with argparse's one-line message where argparse
  would print its usage and exit (`tfrs-din` reports it as bad input)."""

  def error(self, message: str):
    raise ValueError(message)


def job_parser() -> argparse.ArgumentParser:
  """The job's own flags (`add_arguments`); abbreviations are refused, as
  Beam refuses them, so that a Beam flag such as `--label` is never taken
  for the job's `--label_column`."""
  parser = _Parser(prog="python -m beam_jobs.prepare",
                   description="Turns an interaction log into DIN/DIEN "
                   "training data (see beam_jobs.prepare).",
                   formatter_class=argparse.RawDescriptionHelpFormatter,
                   allow_abbrev=False)
  add_arguments(parser)
  return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Options of the job (shared with `tfrs-din prepare`)."""
  a = parser.add_argument
  a("--events", required=True, help="events file pattern (CSV/TSV with header, "
    "JSON lines or Parquet)")
  a("--output", required=True, help="output directory")
  a("--items", help="optional item table (item id + item features)")
  a("--input_format", choices=["csv", "tsv", "jsonl", "parquet"],
    help="format of the inputs (default: from the file extension)")
  a("--user_column", default="user_id", help="user id column "
    "(default: %(default)s)")
  a("--item_column", default="item_id", help="item id column "
    "(default: %(default)s)")
  a("--timestamp_column", default="timestamp", help="event time column: "
    "seconds, milliseconds or ISO 8601 (default: %(default)s)")
  a("--label_column", help="explicit 0/1 label column")
  a("--rating_column", help="rating column; rating >= --rating_threshold is "
    "positive")
  a("--rating_threshold", type=float, default=4.0,
    help="(default: %(default)s)")
  a("--item_features", default="category_id",
    help="comma-separated item side features, '' for none (default: "
    "%(default)s)")
  a("--user_features", default="", help="comma-separated extra user features")
  a("--protocol", choices=PROTOCOLS, default="next_item",
    help="next_item: predict each behaviour from the earlier ones, the "
    "last one is the test target; labeled: explicit labels, users split "
    "into train and test (default: %(default)s)")
  a("--max_history", type=int, default=50,
    help="most recent behaviours kept per sample (default: %(default)s)")
  a("--num_negatives", type=int, default=1,
    help="sampled negatives per positive (next_item; default: %(default)s)")
  a("--no_aux_negatives", action="store_true",
    help="do not write DIEN auxiliary negatives")
  a("--test_fraction", type=float, default=0.1,
    help="share of users in the test split (labeled protocol; default: "
    "%(default)s)")
  a("--min_count", type=int, default=1,
    help="ids seen fewer times map to OOV (default: %(default)s)")
  a("--negative_power", type=float, default=0.0,
    help="negatives drawn with probability ~ count**power, 0 = uniform "
    "(default: %(default)s)")
  a("--max_events_per_user", type=int, default=10_000,
    help="a user's most recent events kept (default: %(default)s)")
  a("--embedding_dim", type=int, default=18,
    help="embedding width the data set records for training (default: "
    "%(default)s)")
  a("--num_shards", type=int, default=0,
    help="output files per split, 0 = chosen by the runner (default: "
    "%(default)s)")
  a("--seed", type=int, default=0,
    help="seed of the sampling, and of training in `run` (default: "
    "%(default)s)")
  a("--overwrite", action="store_true",
    help="replace a prepared data set already in --output")
