"""Beam job: interaction log -> vocabularies, train/test TFRecords, metadata.

  python -m beam_jobs.prepare --events EVENTS [--items ITEMS] --output DIR \
      [--protocol next_item|labeled] [Beam pipeline options]

Output directory:
  vocab/<feature>.tsv        index, id, count (0 = padding, 1 = OOV)
  item_table.tsv             item_id and raw side features of every item
                             (read by the serving export's raw-id lookups)
  train/part-*.tfrecord.gz   gzip TFRecords of tf.train.Example
  test/part-*.tfrecord.gz
  dead_letter/*.jsonl        {"source", "reason", "row"} per rejected row
  metadata.json              feature spec, vocabulary sizes, counts, options

Runners: the DirectRunner by default (`--direct_running_mode=multi_processing
--direct_num_workers=N` to use N processes); `--runner=DataflowRunner
--project=.. --region=.. --temp_location=gs://..`, `--runner=FlinkRunner
--flink_master=..` or `--runner=SparkRunner` scale it out. Every random choice
is seeded per user, so output does not depend on the runner or sharding.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import logging
import sys
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.events import (DEAD, Columns, Event, ValidateEvents, dead_letter,
                              detect_format, item_table_entries, read_rows)
from beam_jobs.sampling import NegativeSampler
from beam_jobs.samples import PROTOCOLS, SampleOptions, UserSampleBuilder
from beam_jobs.vocabulary import Vocabulary
from tfrs_din.schema import SCHEMA_VERSION

METADATA_VERSION = SCHEMA_VERSION  # tfrs_din.schema: readers check it


@dataclasses.dataclass
class PrepareConfig:
  """Everything the job needs besides Beam's own options."""
  events: str
  output: str
  items: Optional[str] = None
  input_format: Optional[str] = None
  columns: Columns = dataclasses.field(default_factory=Columns)
  samples: SampleOptions = dataclasses.field(default_factory=SampleOptions)
  min_count: int = 1
  negative_power: float = 0.0
  max_events_per_user: int = 10_000
  embedding_dim: int = 18
  num_shards: int = 0  # 0: let the runner decide
  overwrite: bool = False


def _write_file(path: str, text: str) -> None:
  with FileSystems.create(path) as handle:
    handle.write(text.encode("utf-8"))


class CleanUserEvents(beam.DoFn):
  """(user, events) -> (user, time-ordered events); dead letters for events
  beyond `max_events_per_user` (the oldest are dropped) and for duplicates.

  The user's events are streamed through a bounded heap, so memory is
  O(max_events_per_user) however many events a user has.
  """

  def __init__(self, max_events_per_user: int):
    self._cap = max_events_per_user
    self._rejected = beam.metrics.Metrics.counter("events", "rejected")

  def process(self, element):
    user, events = element
    heap: List = []
    for event in events:
      entry = (event.sort_key(), event)
      if len(heap) < self._cap:
        heapq.heappush(heap, entry)
        continue
      dropped = heapq.heappushpop(heap, entry)[1]
      self._rejected.inc()
      yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
          "events", f"user {user!r} has more than {self._cap} events; the "
          "oldest are dropped (max_events_per_user)",
          dataclasses.asdict(dropped)))
    ordered: List[Event] = []
    for _, event in sorted(heap, key=lambda e: e[0]):
      if ordered and (event.timestamp, event.item) == (ordered[-1].timestamp,
                                                       ordered[-1].item):
        self._rejected.inc()
        yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
            "events", "duplicate event (same user, item and timestamp)",
            dataclasses.asdict(event)))
        continue
      ordered.append(event)
    yield user, ordered


class BuildUserSamples(beam.DoFn):
  """(user, ordered events) -> ("train"|"test", serialized Example).

  If no sample can be made for a user (no item is left to sample as a
  negative), the user's events are dead-lettered with the reason.
  """

  def __init__(self, config: PrepareConfig):
    self._config = config
    self._used = beam.metrics.Metrics.counter("events", "used")
    self._rejected = beam.metrics.Metrics.counter("events", "rejected")
    self._samples = beam.metrics.Metrics.counter("samples", "written")

  def process(self, element, vocabs, catalogue):
    user, ordered = element
    sampler, item_side = catalogue
    builder = UserSampleBuilder(
        self._config.samples, vocabs, self._config.columns.item_features,
        self._config.columns.user_features, sampler, item_side)
    try:
      samples = list(builder.build(user, ordered))
    except ValueError as error:
      self._rejected.inc(len(ordered))
      for event in ordered:
        yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
            "events", f"user {user!r}: {error}", dataclasses.asdict(event)))
      return
    self._used.inc(len(ordered))
    yield beam.pvalue.TaggedOutput("used", len(ordered))
    self._samples.inc(len(samples))
    yield from samples


def _feature_values(event: Event):
  yield "user_id", event.user
  yield "item_id", event.item
  for name, value in event.item_features + event.user_features:
    yield name, value


def _catalogue(vocabs: Dict[str, Vocabulary], events_items, power: float,
               side_names: Sequence[str]):
  """Negative sampler over the item vocabulary and each item's side features."""
  item_vocab = vocabs["item_id"]
  side = {}
  for item, feats in events_items:
    feats = dict(feats)
    side[item_vocab.index(item)] = tuple(vocabs[n].index(feats[n])
                                         for n in side_names)
  items = [item_vocab.index(i) for i in item_vocab.ids]
  return NegativeSampler(items, item_vocab.counts, power), side


def item_table_tsv(rows, side_names: Sequence[str]) -> str:
  """`item_id<TAB>side...` with a header, one line per item, sorted by id.

  Args:
    rows: (item, ((feature, raw value), ...)) pairs, one per item.
    side_names: the item side features, in column order.
  """
  lines = ["\t".join(["item_id"] + list(side_names))]
  for item, feats in sorted(rows):
    feats = dict(feats)
    lines.append("\t".join([item] + [feats[n] for n in side_names]))
  return "\n".join(lines) + "\n"


def _metadata(_, config: PrepareConfig, vocabs, counts) -> str:
  cols = config.columns
  spec = {
      "user_features": [{"name": n, "vocab_size": vocabs[n].size,
                         "embedding_dim": config.embedding_dim}
                        for n in ["user_id"] + list(cols.user_features)],
      "item_features": [{"name": n, "vocab_size": vocabs[n].size,
                         "embedding_dim": config.embedding_dim}
                        for n in ["item_id"] + list(cols.item_features)],
      "max_history": config.samples.max_history,
      "numeric_features": [], "label": "label", "group_key": "user_id",
  }
  counts = dict(counts)
  counts.setdefault("events_rejected", 0)
  counts.setdefault("items_rejected", 0)
  for split in ("train", "test"):
    counts.setdefault(f"samples_{split}", 0)
  options = dataclasses.asdict(config)
  return json.dumps({
      "version": METADATA_VERSION, "feature_spec": spec, "counts": counts,
      "vocabulary_sizes": {n: v.size for n, v in vocabs.items()},
      "has_aux_negatives": config.samples.aux_negatives,
      "options": options}, indent=2, sort_keys=True)


def build_pipeline(pipeline: beam.Pipeline, config: PrepareConfig) -> None:
  """Adds the whole job to `pipeline`."""
  cols = config.columns
  if config.samples.protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}, "
                     f"got {config.samples.protocol!r}")
  if config.samples.protocol == "labeled" and not (cols.label or cols.rating):
    raise ValueError("the labeled protocol needs --label_column or "
                     "--rating_column")
  out = config.output.rstrip("/")
  counts = []

  def count(pcoll, name):
    counts.append(pcoll | f"Count_{name}" >> beam.combiners.Count.Globally()
                  | f"Name_{name}" >> beam.Map(lambda n, k=name: (k, n)))

  item_table = None
  dead = []
  if config.items:
    item_rows = read_rows(pipeline, config.items,
                          detect_format(config.items, config.input_format), "Items")
    entries = item_rows | "ItemEntries" >> beam.Map(
        item_table_entries, cols, cols.item_features)
    bad_items = (entries | "BadItems" >> beam.Filter(lambda kv: kv[0] is None)
                 | "BadItemRows" >> beam.Map(lambda kv: kv[1]))
    grouped = (entries | "GoodItems" >> beam.Filter(lambda kv: kv[0] is not None)
               | "GroupItems" >> beam.GroupByKey()
               | "UniqueItems" >> beam.ParDo(_SplitDuplicateItems()
                                             ).with_outputs(DEAD, main="items"))
    item_table = beam.pvalue.AsDict(grouped.items)
    dead += [bad_items, grouped[DEAD]]
    count(item_rows, "items_read")
    count((bad_items, grouped[DEAD]) | "AllBadItems" >> beam.Flatten(),
          "items_rejected")

  rows = read_rows(pipeline, config.events,
                   detect_format(config.events, config.input_format), "Events")
  count(rows, "events_read")
  validated = rows | "Validate" >> beam.ParDo(
      ValidateEvents(cols), *([item_table] if item_table else [])
  ).with_outputs(DEAD, main="events")
  events = validated.events
  dead.append(validated[DEAD])

  cleaned = (events
             | "ByUser" >> beam.Map(lambda e: (e.user, e))
             | "GroupUser" >> beam.GroupByKey()
             | "CleanUser" >> beam.ParDo(CleanUserEvents(
                 config.max_events_per_user)).with_outputs(DEAD, main="users"))
  dead.append(cleaned[DEAD])
  kept = cleaned.users | "KeptEvents" >> beam.FlatMap(lambda kv: kv[1])

  vocabs = (kept
            | "FeatureValues" >> beam.FlatMap(lambda e: list(_feature_values(e)))
            | "CountValues" >> beam.combiners.Count.PerElement()
            | "ByFeature" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1])))
            | "GroupFeature" >> beam.GroupByKey()
            | "Vocabulary" >> beam.MapTuple(
                lambda name, c: (name, Vocabulary.from_counts(
                    name, c, config.min_count))))
  _ = vocabs | "WriteVocab" >> beam.MapTuple(
      lambda name, v: _write_file(f"{out}/vocab/{name}.tsv", v.to_tsv()))
  vocab_side = beam.pvalue.AsDict(vocabs)

  one_side = (kept
              | "ItemSide" >> beam.Map(lambda e: (e.item, e.item_features))
              | "OneSidePerItem" >> beam.CombinePerKey(min))
  item_side = one_side | "SideList" >> beam.combiners.ToList()
  # Serving looks items up by raw id: the whole item table when one is given
  # (items without events included), else each item's side features as used
  # for negatives above.
  table_rows = grouped.items if config.items else one_side
  _ = (table_rows | "ItemTableList" >> beam.combiners.ToList()
       | "WriteItemTable" >> beam.Map(lambda rows: _write_file(
           f"{out}/item_table.tsv",
           item_table_tsv(rows, cols.item_features))))
  catalogue = (pipeline | "Seed" >> beam.Create([None])
               | "Catalogue" >> beam.Map(
                   lambda _, v, s: _catalogue(v, s, config.negative_power,
                                              cols.item_features),
                   vocab_side, beam.pvalue.AsSingleton(item_side)))

  built = (cleaned.users
           | "Samples" >> beam.ParDo(
               BuildUserSamples(config), vocab_side,
               beam.pvalue.AsSingleton(catalogue)
           ).with_outputs(DEAD, "used", main="samples"))
  dead.append(built[DEAD])
  counts.append(built.used | "SumUsed" >> beam.CombineGlobally(sum)
                | "NameUsed" >> beam.Map(lambda n: ("events_used", n)))

  for split in ("train", "test"):
    examples = (built.samples
                | f"Only_{split}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
                | f"Bytes_{split}" >> beam.Values())
    count(examples, f"samples_{split}")
    _ = examples | f"Write_{split}" >> beam.io.WriteToTFRecord(
        f"{out}/{split}/part", file_name_suffix=".tfrecord.gz",
        num_shards=config.num_shards,
        compression_type=beam.io.filesystem.CompressionTypes.GZIP)

  all_dead = tuple(dead) | "AllDead" >> beam.Flatten()
  event_dead = all_dead | "EventDead" >> beam.Filter(
      lambda d: d["source"] == "events")
  count(event_dead, "events_rejected")
  _ = (all_dead | "DeadJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
       | "WriteDead" >> beam.io.WriteToText(f"{out}/dead_letter/part",
                                            file_name_suffix=".jsonl"))
  reasons = (all_dead
             | "Reason" >> beam.Map(lambda d: (d["source"], d["reason"]))
             | "CountReasons" >> beam.combiners.Count.PerElement()
             | "ReasonList" >> beam.combiners.ToList())
  counts.append(reasons | "NameReasons" >> beam.Map(
      lambda r: ("rejected_by_reason",
                 sorted([{"source": s, "reason": why, "count": n}
                         for (s, why), n in r],
                        key=lambda x: (x["source"], x["reason"])))))
  all_counts = tuple(counts) | "AllCounts" >> beam.Flatten()
  _ = (pipeline | "MetaSeed" >> beam.Create([None])
       | "Metadata" >> beam.Map(_metadata, config, vocab_side,
                                beam.pvalue.AsList(all_counts))
       | "WriteMetadata" >> beam.Map(
           lambda text: _write_file(f"{out}/metadata.json", text)))


class _SplitDuplicateItems(beam.DoFn):
  """Keeps the smallest row of each item id and dead-letters the others.

  File order is not preserved by distributed runners, so "the first row in the
  file" would not be deterministic; the smallest row is.
  """

  def process(self, element):
    item, rows = element
    rows = sorted(rows)
    yield item, rows[0]
    for extra in rows[1:]:
      yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
          "items", f"duplicate item {item!r} in the item table",
          {"item": item, "features": dict(extra)}))


def parse_args(argv: Optional[Sequence[str]] = None):
  parser = argparse.ArgumentParser(
      prog="python -m beam_jobs.prepare", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(parser)
  return parser.parse_known_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Options of the job (shared with `tfrs-din prepare`)."""
  a = parser.add_argument
  a("--events", required=True, help="events file pattern (CSV/TSV with header, "
    "JSON lines or Parquet)")
  a("--output", required=True, help="output directory")
  a("--items", help="optional item table (item id + item features)")
  a("--input_format", choices=["csv", "tsv", "jsonl", "parquet"],
    help="format of the inputs (default: from the file extension)")
  a("--user_column", default="user_id")
  a("--item_column", default="item_id")
  a("--timestamp_column", default="timestamp")
  a("--label_column", help="explicit 0/1 label column")
  a("--rating_column", help="rating column; rating >= --rating_threshold is positive")
  a("--rating_threshold", type=float, default=4.0)
  a("--item_features", default="category_id",
    help="comma-separated item side features ('' for none)")
  a("--user_features", default="", help="comma-separated extra user features")
  a("--protocol", choices=PROTOCOLS, default="next_item")
  a("--max_history", type=int, default=50)
  a("--num_negatives", type=int, default=1)
  a("--no_aux_negatives", action="store_true",
    help="do not write DIEN auxiliary negatives")
  a("--test_fraction", type=float, default=0.1,
    help="share of users in the test split (labeled protocol)")
  a("--min_count", type=int, default=1, help="ids seen fewer times map to OOV")
  a("--negative_power", type=float, default=0.0,
    help="negatives drawn with probability ~ count**power (0 = uniform)")
  a("--max_events_per_user", type=int, default=10_000)
  a("--embedding_dim", type=int, default=18)
  a("--num_shards", type=int, default=0)
  a("--seed", type=int, default=0)
  a("--overwrite", action="store_true",
    help="replace a prepared data set already in --output")


def config_from_args(args) -> PrepareConfig:
  names = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
  for name, value in (("--max_history", args.max_history),
                      ("--max_events_per_user", args.max_events_per_user),
                      ("--min_count", args.min_count)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  if args.num_negatives < 0:
    raise ValueError(f"--num_negatives must be >= 0, got {args.num_negatives}")
  if not 0.0 <= args.test_fraction < 1.0:
    raise ValueError(f"--test_fraction must be in [0, 1), got {args.test_fraction}")
  return PrepareConfig(
      events=args.events, output=args.output, items=args.items,
      input_format=args.input_format,
      columns=Columns(user=args.user_column, item=args.item_column,
                      timestamp=args.timestamp_column, label=args.label_column,
                      rating=args.rating_column,
                      rating_threshold=args.rating_threshold,
                      item_features=names(args.item_features),
                      user_features=names(args.user_features)),
      samples=SampleOptions(protocol=args.protocol, max_history=args.max_history,
                            num_negatives=args.num_negatives,
                            aux_negatives=not args.no_aux_negatives,
                            test_fraction=args.test_fraction, seed=args.seed),
      min_count=args.min_count, negative_power=args.negative_power,
      max_events_per_user=args.max_events_per_user,
      embedding_dim=args.embedding_dim, num_shards=args.num_shards,
      overwrite=args.overwrite)


def run(config: PrepareConfig, beam_args: Sequence[str] = ()) -> dict:
  """Runs the job to completion and returns the metadata it wrote."""
  if not FileSystems.match([config.events])[0].metadata_list:
    raise ValueError(f"--events: no file matches {config.events!r}")
  if config.items and not FileSystems.match([config.items])[0].metadata_list:
    raise ValueError(f"--items: no file matches {config.items!r}")
  out = config.output.rstrip("/")
  existing = [p for p in ("metadata.json", "item_table.tsv", "train", "test",
                          "vocab", "dead_letter")
              if FileSystems.exists(f"{out}/{p}")]
  if existing and not config.overwrite:
    raise ValueError(f"--output: {config.output!r} already holds a prepared data "
                     f"set ({', '.join(existing)}); pass --overwrite to replace it")
  if existing:
    FileSystems.delete([f"{out}/{p}" for p in existing])
  options = PipelineOptions(list(beam_args))
  with beam.Pipeline(options=options) as pipeline:
    build_pipeline(pipeline, config)
  with FileSystems.open(f"{config.output.rstrip('/')}/metadata.json") as handle:
    return json.loads(handle.read().decode("utf-8"))


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.getLogger().setLevel(logging.WARNING)
  args, beam_args = parse_args(argv)
  try:
    metadata = run(config_from_args(args), beam_args)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(json.dumps(metadata["counts"], indent=2, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
