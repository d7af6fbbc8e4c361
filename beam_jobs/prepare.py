"""Beam job: interaction log -> vocabularies, train/test TFRecords, metadata.

  python -m beam_jobs.prepare --events EVENTS [--items ITEMS] --output DIR \
      [--protocol next_item|labeled] [Beam pipeline options]

Output directory:
  vocab/<feature>.tsv        index, id, count (0 = padding, 1 = OOV)
  item_table.tsv             item_id and raw side features of every item
                             (read by the serving export's raw-id lookups)
  train/part-*.tfrecord.gz   gzip TFRecords of tf.train.Example; a shard
  test/part-*.tfrecord.gz    (hash of the user id) holds its users in the
                             order of another hash of the id (`write_order`)
  dead_letter/*.jsonl        {"source", "reason", "row"} per rejected row
  metadata.json              feature spec, vocabulary sizes, counts, options
  _SUCCESS                   written last, when everything else is in place

`run` checks the inputs first (`beam_jobs.preflight`: an empty file, missing
columns, no valid row among the first ones are one `InputError` line). The
pipeline writes into DIR/_temporary/<run id>/ and `run` moves the files into
DIR after it has succeeded; a run that fails leaves DIR as it was.

Flags other than the job's own and Beam's pipeline options are refused
(`split_beam_args`), with the closest known flag suggested.

Runners: the DirectRunner by default (`--direct_running_mode=multi_processing
--direct_num_workers=N` to use N processes); `--runner=DaskRunner
--dask_client_address=..`, `--runner=DataflowRunner --project=.. --region=..
--temp_location=gs://..`, `--runner=FlinkRunner --flink_master=..` or
`--runner=SparkRunner` scale it out. Every random choice is seeded per user
and every file is written in a sorted order, so the output bytes do not depend
on the runner or sharding. See docs/design.md ("Beam job") for why the
pipeline avoids Beam's Read/Write transforms and multi-output ParDos.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import gc
import heapq
import itertools
import json
import logging
import os
import sys
import threading
import time
import uuid
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import preflight
from beam_jobs.events import (DEAD, UTF8_BOM, Columns, InputError,  # pylint: disable=unused-import
                              RowParser, ValidateEvents, _parse_json,
                              _ParseDelimited, dead_letter, detect_format,
                              item_table_entries, read_header, record_row)
from beam_jobs.options import add_arguments, job_parser  # noqa: F401  (the job's flags)
from beam_jobs.sampling import NegativeSampler, stable_hash
from beam_jobs.samples import PROTOCOLS, FastUserSampleBuilder, SampleOptions
from beam_jobs.vocabulary import Vocabulary
from tfrs_din import schema
from tfrs_din._suggest import did_you_mean
from tfrs_din.schema import SCHEMA_VERSION, vocabulary_path

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


# Tags of the elements of the union PCollections. The pipeline uses one output
# per ParDo and `_only` filters rather than `with_outputs`: Beam's DaskRunner
# (2.77) hands every consumer all outputs of a multi-output ParDo.
USER, STATS, DEAD_TAG, COUNT, RECORDS, FILE = ("user", "stats", "dead", "count",
                                              "records", "file")

# Inputs are read in byte ranges of at most this size (a file per range if
# compressed); at least `MIN_RANGES` ranges when the input is large enough.
RANGE_BYTES = 64 << 20
MIN_RANGES = 16
MIN_RANGE_BYTES = 1 << 20
# num_shards=0: one output shard per this many bytes of input events.
SHARD_INPUT_BYTES = 64 << 20
SUCCESS_FILE = schema.SUCCESS_FILE
# Written by the last step, instead of metadata.json, when the run cannot
# make a data set; it holds the reason (one line) and is never committed.
FAILED_FILE = "_FAILED"
TEMPORARY_DIR = "_temporary"
PROGRESS_SECONDS = 30.0
# ReadEvents groups the events of a range by user before they enter the
# group-by-user, flushing after this many events: one element per user and
# batch instead of one per event (Beam's per-element cost), with the reader's
# memory bounded by the batch.
READ_BATCH_EVENTS = 1 << 16

_LOG = logging.getLogger("beam_jobs.prepare")


def _write_file(path: str, text: str) -> None:
  with FileSystems.create(path) as handle:
    handle.write(text.encode("utf-8"))


def _only(tag: str):
  return lambda kv: kv[0] == tag


# Progress --------------------------------------------------------------------
class _Progress:
  """Per-process totals and a log line every `seconds` (workers log it on
  their own; the DirectRunner's in-memory mode runs in the driver)."""
  totals = {"events read": 0, "users done": 0, "samples written": 0}
  _last = [0.0, None]  # time of the last line, start time
  _lock = threading.Lock()

  @classmethod
  def add(cls, name: str, n: int, seconds: float) -> None:
    now = time.monotonic()
    with cls._lock:
      cls.totals[name] += n
      if cls._last[1] is None:
        cls._last[:] = [now, now]
      if now - cls._last[0] < seconds:
        return
      cls._last[0] = now
      elapsed = max(now - cls._last[1], 1e-9)
      text = ", ".join(f"{k} {v}" for k, v in cls.totals.items())
      rate = cls.totals["events read"] / elapsed
    _LOG.info("prepare progress (pid %d, %.0f s): %s; %.0f events/s read",
              os.getpid(), elapsed, text, rate)

  @classmethod
  def reset(cls) -> None:
    with cls._lock:
      for key in cls.totals:
        cls.totals[key] = 0
      cls._last[:] = [0.0, None]


# Reading ---------------------------------------------------------------------
def _ranges(pattern: str, fmt: str, range_bytes: int) -> List[Tuple]:
  """(path, start, end) byte ranges covering the files of `pattern` (for
  Parquet: (path, row group, -1)). Done at construction, so every runner gets
  the same list; Beam's own sources are not used because the DaskRunner does
  not run them."""
  files = sorted((m.path, m.size_in_bytes)
                 for m in FileSystems.match([pattern])[0].metadata_list)
  out = []
  for path, size in files:
    if fmt == "parquet":
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
      with FileSystems.open(path) as handle:
        groups = pq.ParquetFile(handle).num_row_groups
      out += [(path, g, -1) for g in range(groups)]
    elif CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
      out.append((path, 0, -1))  # not splittable
    else:
      out += [(path, start, min(size, start + range_bytes))
              for start in range(0, size, range_bytes)]
  return out


def _range_bytes(pattern: str, cap: int) -> int:
  total = sum(m.size_in_bytes for m in FileSystems.match([pattern])[0].metadata_list)
  return max(MIN_RANGE_BYTES, min(cap, -(-total // MIN_RANGES)))


# `_read_range` reads this many bytes at a time (then to the end of the line).
READ_BLOCK_BYTES = 1 << 20


def _read_range(path: str, start: int, end: int, fmt: str,
                skip_header: bool) -> Iterator:
  """Lines whose first byte is in [start, end), as `ReadFromText` splits
  them ('\\n' or '\\r\\n'): str, or the raw bytes of a line that is not
  UTF-8; rows (dicts) of a Parquet row group."""
  for lines, _ in _read_blocks(path, start, end, fmt, skip_header):
    yield from lines


def _read_blocks(path: str, start: int, end: int, fmt: str,
                 skip_header: bool) -> Iterator[Tuple[List, Optional[str]]]:
  """`_read_range`'s lines a block at a time: (lines, the block's text), the
  text None where the block is not UTF-8 (or for Parquet rows). A UTF-8
  byte-order mark at the start of a file is not part of its first line."""
  if fmt == "parquet":
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    with FileSystems.open(path) as handle:
      yield pq.ParquetFile(handle).read_row_group(start).to_pylist(), None
    return
  compressed = end < 0
  with FileSystems.open(path, compression_type=(
      CompressionTypes.AUTO if compressed else CompressionTypes.UNCOMPRESSED)
                        ) as handle:
    position = start
    if start > 0:
      handle.seek(start - 1)
      position = start - 1 + len(handle.readline())  # finish the previous line
    elif skip_header:
      position += len(handle.readline())
    at_start = position == 0
    while compressed or position < end:
      block = handle.read(READ_BLOCK_BYTES if compressed
                          else min(READ_BLOCK_BYTES, end - position))
      if not block:
        break
      if not block.endswith(b"\n"):
        block += handle.readline()  # the last line, whole
      position += len(block)
      if at_start:
        at_start = False
        if block.startswith(UTF8_BOM):
          block = block[len(UTF8_BOM):]
          if not block:
            continue
      yield _lines(block)


def _lines(block: bytes) -> Tuple[List, Optional[str]]:
  """The lines of a block of whole lines (see `_read_range`), and its text."""
  try:
    text = block.decode("utf-8")
  except UnicodeDecodeError:
    lines = []
    for raw in block.split(b"\n")[:-1 if block.endswith(b"\n") else None]:
      raw = raw[:-1] if raw.endswith(b"\r") else raw
      try:
        lines.append(raw.decode("utf-8"))
      except UnicodeDecodeError:
        lines.append(raw)
    return lines, None
  lines = text.split("\n")
  if block.endswith(b"\n"):
    lines.pop()
  if "\r" in text:
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
  return lines, text


def _not_utf8(source: str, line: bytes) -> Dict:
  return dead_letter(source, "line is not valid UTF-8",
                     line.decode("utf-8", "backslashreplace"))


class ReadEvents(beam.DoFn):
  """A byte range of the events -> (user, [EventRecord, ...]) per user and
  batch of `batch_events` valid events, and under the key None: ("dead", dead
  letter) per rejected row and ("count", ("events_read", n)) per range.

  Reading, splitting and validating happen in one step, and the events of a
  user within a batch travel as one element into the group-by-user.
  """

  def __init__(self, columns: Columns, fmt: str, header: Optional[List[str]],
               progress_seconds: float = PROGRESS_SECONDS,
               batch_events: Optional[int] = None):
    self._parser = RowParser(columns, fmt, header)
    self._fmt = fmt
    self._progress_seconds = progress_seconds
    self._batch_events = batch_events or READ_BATCH_EVENTS
    self._read = beam.metrics.Metrics.counter("events", "read")
    self._rejected = beam.metrics.Metrics.counter("events", "rejected")

  def process(self, element, item_table=None):
    path, start, end = element
    parser = self._parser
    n = 0
    ticks = 0
    batch: Dict[str, List] = {}
    batched = 0
    for lines, text in _read_blocks(
        path, start, end, self._fmt, skip_header=self._fmt in ("csv", "tsv")):
      # A plain block (no quotes, no whitespace to strip) skips the
      # per-field work that only unusual lines need.
      parse = (parser.parse_plain if text is not None and parser.is_plain(text)
               else parser.parse)
      for line in lines:
        parsed = (parse(line, item_table) if not isinstance(line, bytes)
                  else (None, _not_utf8("events", line)))
        if parsed is None:
          continue
        n += 1
        user = parsed[0]
        if user is None:
          self._rejected.inc()
          yield None, (DEAD_TAG, parsed[1])
        else:
          records = batch.get(user)
          if records is None:
            batch[user] = [parsed[1]]
          else:
            records.append(parsed[1])
          batched += 1
          if batched >= self._batch_events:
            yield from batch.items()
            batch = {}
            batched = 0
        if n - ticks >= 4096:
          self._read.inc(n - ticks)
          _Progress.add("events read", n - ticks, self._progress_seconds)
          ticks = n
    yield from batch.items()
    self._read.inc(n - ticks)
    _Progress.add("events read", n - ticks, self._progress_seconds)
    yield None, (COUNT, ("events_read", n))


class ReadItems(beam.DoFn):
  """A range of the item table -> (item, features), or under the key None:
  ("dead", dead letter) per bad row and ("count", ("items_read", n))."""

  def __init__(self, columns: Columns, fmt: str, header: Optional[List[str]]):
    self._columns = columns
    self._fmt = fmt
    self._split = (_ParseDelimited(header, "\t" if fmt == "tsv" else ",")
                   if header is not None else None)

  def process(self, element):
    path, start, end = element
    n = 0
    for line in _read_range(path, start, end, self._fmt,
                            skip_header=self._fmt in ("csv", "tsv")):
      if isinstance(line, bytes):
        n += 1
        yield None, (DEAD_TAG, _not_utf8("items", line))
        continue
      if self._fmt == "parquet":
        rows = [line]
      elif self._fmt == "jsonl":
        rows = _parse_json(line)
      else:
        rows = list(self._split.process(line))
      for row in rows:
        n += 1
        if "__parse_error__" in row:
          yield None, (DEAD_TAG, dead_letter("items", row["__parse_error__"],
                                             row["__line__"]))
          continue
        item, value = item_table_entries(row, self._columns,
                                         self._columns.item_features)
        yield (item, value) if item is not None else (None, (DEAD_TAG, value))
    yield None, (COUNT, ("items_read", n))


class UniqueItems(beam.DoFn):
  """(item, rows) -> ("user"-less) union: ("item", (item, features)) for the
  smallest row, ("dead", ...) for duplicates and passes the key None through.

  File order is not preserved by distributed runners, so "the first row in the
  file" would not be deterministic; the smallest row is.
  """

  def process(self, element):
    item, rows = element
    if item is None:
      for tag, value in rows:
        yield tag, value
      return
    rows = sorted(rows)
    yield "item", (item, rows[0])
    for extra in rows[1:]:
      yield DEAD_TAG, dead_letter(
          "items", f"duplicate item {item!r} in the item table",
          {"item": item, "features": dict(extra)})


# Per user ---------------------------------------------------------------------
class CleanUser(beam.DoFn):
  """(user, batches of EventRecords) -> ("user", (user, time-ordered records)) and
  ("stats", (feature value counts, item -> side features)) of the kept events;
  ("dead", ...) for events beyond `max_events_per_user` (the oldest are
  dropped) and duplicates. The key None carries the reading's dead letters and
  counts through.

  Memory is O(max_events_per_user) per user: past the cap the events stream
  through a bounded heap.
  """

  def __init__(self, max_events_per_user: int, columns: Columns):
    self._cap = max_events_per_user
    self._user_features = tuple(columns.user_features)
    self._rejected = beam.metrics.Metrics.counter("events", "rejected")

  def process(self, element):
    user, values = element
    if user is None:
      for tag, value in values:
        yield tag, value
      return
    kept: List = []
    dead = []
    it = itertools.chain.from_iterable(values)  # ReadEvents' batches
    for rec in it:
      kept.append(rec)
      if len(kept) == self._cap:
        break
    heapq.heapify(kept)
    for rec in it:  # only past the cap
      dropped = heapq.heappushpop(kept, rec)
      dead.append(dead_letter(
          "events", f"user {user!r} has more than {self._cap} events; the "
          "oldest are dropped (max_events_per_user)", record_row(user, dropped)))
    kept.sort()
    ordered = []
    last = None
    for rec in kept:
      if last is not None and rec[0] == last[0] and rec[1] == last[1]:
        dead.append(dead_letter(
            "events", "duplicate event (same user, item and timestamp)",
            record_row(user, rec)))
        continue
      ordered.append(rec)
      last = rec
    for letter in dead:
      self._rejected.inc()
      yield DEAD_TAG, letter
    pairs = []  # every (feature, value) of the kept events, counted at once
    side: Dict[str, Tuple] = {}
    for rec in ordered:
      pairs.append(("item_id", rec[1]))
      pairs += rec[3]
      pairs += rec[4]
      old = side.get(rec[1])
      if old is None or rec[3] < old:
        side[rec[1]] = rec[3]
    counts = collections.Counter(pairs)
    counts[("user_id", user)] = len(ordered)
    yield STATS, (counts, side)
    yield USER, (user, ordered)


class _MergeStats(beam.CombineFn):
  """Sums feature-value counts and keeps the smallest side features per item."""

  def create_accumulator(self):
    return collections.Counter(), {}

  def add_input(self, acc, element):
    counts, side = acc
    counts.update(element[0])
    for item, feats in element[1].items():
      old = side.get(item)
      if old is None or feats < old:
        side[item] = feats
    return acc

  def merge_accumulators(self, accumulators):
    accumulators = iter(accumulators)
    acc = next(accumulators)
    for other in accumulators:
      self.add_input(acc, other)
    return acc

  def extract_output(self, acc):
    return acc


def _catalogue(stats, config: PrepareConfig):
  """Vocabularies, the negative sampler and each item's side indices, from
  the merged statistics of the kept events."""
  counts, side = stats
  cols = config.columns
  by_feature: Dict[str, List] = {n: [] for n in
                                 ["user_id", "item_id"] + list(cols.item_features)
                                 + list(cols.user_features)}
  for (name, value), n in counts.items():
    by_feature.setdefault(name, []).append((value, n))
  vocabs = {name: Vocabulary.from_counts(name, c, config.min_count)
            for name, c in by_feature.items() if c}
  item_vocab = vocabs["item_id"]
  # Sorted: with min_count > 1 several items share the OOV index, and the
  # last one (by id) must win on every runner.
  side_index = {item_vocab.index(item): tuple(vocabs[n].index(v) for n, v in feats)
                for item, feats in sorted(side.items())}
  items = [item_vocab.index(i) for i in item_vocab.ids]
  sampler = NegativeSampler(items, item_vocab.counts, config.negative_power)
  return vocabs, sampler, side_index, sorted(side.items())


# Level of the Zstandard compression of a user's TFRecord frames while they
# wait in the (split, shard) shuffle: the in-memory runner holds the whole
# shuffle, and a user's samples repeat the same history prefixes, so even
# level 1 shrinks them several-fold. Zstandard (a dependency of Beam's own
# compressed IO) compresses and inflates faster than zlib at level 1, with a
# better ratio; the files written are the same either way (this codec never
# reaches them).
SHUFFLE_COMPRESSION_LEVEL = 1


def shuffle_compressor() -> zstandard.ZstdCompressor:
  """The codec of the frames in the (split, shard) shuffle (one per DoFn
  instance: a compressor is not safe to share between threads)."""
  return zstandard.ZstdCompressor(level=SHUFFLE_COMPRESSION_LEVEL)


def shuffle_decompress(payload: bytes) -> bytes:
  """The frames a `shuffle_compressor` compressed."""
  return zstandard.ZstdDecompressor().decompress(payload)


class BuildUserSamples(beam.DoFn):
  """("user", (user, ordered records)) -> ("records", ((split, shard), (user,
  n, compressed TFRecord frames))) per split, ("count", ("events_used",
  n)) and ("count", (SAMPLES_BUILT, samples)); if no sample can be made
  (no item is left to sample as a negative) the user's events are
  dead-lettered with the reason.
  """

  def __init__(self, config: PrepareConfig, num_shards: int,
               progress_seconds: float = PROGRESS_SECONDS):
    self._config = config
    self._num_shards = num_shards
    self._progress_seconds = progress_seconds
    self._builder = None
    self._catalogue_id = None
    self._used = beam.metrics.Metrics.counter("events", "used")
    self._rejected = beam.metrics.Metrics.counter("events", "rejected")
    self._users = beam.metrics.Metrics.counter("users", "done")
    self._samples = beam.metrics.Metrics.counter("samples", "written")
    self._compressor = None

  def setup(self):
    self._compressor = shuffle_compressor()

  def process(self, element, catalogue):
    user, ordered = element[1]
    if self._builder is None or self._catalogue_id != id(catalogue):
      vocabs, sampler, side, _ = catalogue
      cols = self._config.columns
      self._builder = FastUserSampleBuilder(
          self._config.samples, vocabs, cols.item_features, cols.user_features,
          sampler, side)
      self._catalogue_id = id(catalogue)
    try:
      splits = self._builder.encode(user, ordered)
    except ValueError as error:
      self._rejected.inc(len(ordered))
      for rec in ordered:
        yield DEAD_TAG, dead_letter("events", f"user {user!r}: {error}",
                                    record_row(user, rec))
      return
    self._used.inc(len(ordered))
    self._users.inc()
    yield COUNT, ("events_used", len(ordered))
    shard = stable_hash(user) % self._num_shards
    written = 0
    for split, (n, frames) in splits.items():
      written += n
      yield RECORDS, ((split, shard), (
          user, n, self._compressor.compress(frames)))
    yield COUNT, (SAMPLES_BUILT, written)
    self._samples.inc(written)
    _Progress.add("users done", 1, self._progress_seconds)
    _Progress.add("samples written", written, self._progress_seconds)


def write_order(user_frames: Tuple) -> Tuple[int, str]:
  """Sort key of a (user, n, frames) in its shard: a hash of the user id.

  A user's samples stay together, but the users follow a pseudo-random,
  runner-independent order. Training shuffles a split whole up to its
  `shuffle_buffer` (`make_dataset`), and a larger split through a window of
  that size, where the file's order reaches the batches: users sorted by id
  cost test GAUC against the same records well mixed (docs/results.md, "The
  order of the training records").
  """
  user = user_frames[0]
  return stable_hash(user, "write order"), user


def shard_name(prefix: str, shard: int, num_shards: int, suffix: str) -> str:
  """Beam's default shard naming: `prefix-00000-of-00004suffix`."""
  return f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


class WriteShard(beam.DoFn):
  """((split, shard), [(user, n, compressed frames)]) -> one gzip TFRecord
  file, users in `write_order` (so the bytes do not depend on the runner);
  ("count", ("samples_<split>", n)) and ("file", path)."""

  def __init__(self, root: str, num_shards: int):
    self._root = root
    self._num_shards = num_shards

  def process(self, element):
    (split, shard), users = element
    users = sorted(users, key=write_order)
    path = shard_name(f"{self._root}/{split}/part", shard, self._num_shards,
                      schema.TFRECORD_SUFFIX)
    with FileSystems.create(path, compression_type=CompressionTypes.GZIP) as f:
      for _, _, frames in users:
        f.write(shuffle_decompress(frames))
    yield COUNT, (f"samples_{split}", sum(n for _, n, _ in users))
    yield FILE, path


class WriteDeadLetters(beam.DoFn):
  """(shard, [json lines]) -> one sorted JSON-lines file; counts of rejected
  events and of rejections by (source, reason)."""

  def __init__(self, root: str, num_shards: int):
    self._root = root
    self._num_shards = num_shards

  def process(self, element):
    shard, lines = element
    lines = sorted(lines)
    path = shard_name(f"{self._root}/dead_letter/part", shard, self._num_shards,
                      ".jsonl")
    with FileSystems.create(path) as f:
      f.write("".join(line + "\n" for line in lines).encode("utf-8"))
    reasons = collections.Counter()
    rejected = 0
    for line in lines:
      letter = json.loads(line)
      reasons[(letter["source"], letter["reason"])] += 1
      rejected += letter["source"] == "events"
    yield COUNT, ("events_rejected", rejected)
    for (source, reason), n in sorted(reasons.items()):
      yield "reason", (source, reason, n)
    yield FILE, path


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


def _metadata(config: PrepareConfig, sizes: Dict[str, int], counts) -> str:
  cols = config.columns
  spec = {
      "user_features": [{"name": n, "vocab_size": sizes[n],
                         "embedding_dim": config.embedding_dim}
                        for n in ["user_id"] + list(cols.user_features)],
      "item_features": [{"name": n, "vocab_size": sizes[n],
                         "embedding_dim": config.embedding_dim}
                        for n in ["item_id"] + list(cols.item_features)],
      "max_history": config.samples.max_history,
      "numeric_features": [], "label": "label", "group_key": "user_id",
  }
  counts = dict(counts)
  for key in ("events_read", "events_used", "events_rejected"):
    counts.setdefault(key, 0)
  if config.items:
    counts.setdefault("items_read", 0)
  counts.setdefault("items_rejected", 0)
  for split in ("train", "test"):
    counts.setdefault(f"samples_{split}", 0)
  counts.setdefault("rejected_by_reason", [])
  options = dataclasses.asdict(config)
  return json.dumps({
      "version": METADATA_VERSION, "feature_spec": spec, "counts": counts,
      "vocabulary_sizes": sizes,
      "has_aux_negatives": config.samples.aux_negatives,
      "options": options}, indent=2, sort_keys=True)


# Samples made per user (counted before the (split, shard) shuffle, against
# the samples the shard writers wrote after it); not in the metadata.
SAMPLES_BUILT = "samples_built"


def check_accounting(counts: Dict[str, int]) -> None:
  """Raises ValueError unless every event read was used or dead-lettered and
  every sample made was written.

  Events are counted where they are read, used where their samples are made
  (after the group-by-user) and rejected where the dead letters are written
  (after their own shuffle); samples where they are made and where the files
  are written. A runner that drops or repeats elements in a shuffle (seen
  here: Dask's disk shuffle across worker processes) breaks one of the two
  equations, and the job then fails instead of committing that output.

  Args:
    counts: the run's counts, `SAMPLES_BUILT` included.
  """
  read, used, rejected = (counts.get(k, 0) for k in (
      "events_read", "events_used", "events_rejected"))
  if read != used + rejected:
    raise ValueError(
        f"events_read {read} != events_used {used} + events_rejected "
        f"{rejected}: the runner lost or repeated {read - used - rejected:+d} "
        "events between reading them and writing their samples or dead "
        "letters; nothing is committed")
  built = counts.get(SAMPLES_BUILT, 0)
  written = counts.get("samples_train", 0) + counts.get("samples_test", 0)
  if built != written:
    raise ValueError(
        f"samples made {built} != samples_train + samples_test {written}: the "
        f"runner lost or repeated {built - written:+d} samples in the shuffle "
        "before the shard writers; nothing is committed")


def no_event_kept(config: PrepareConfig, counts: Dict[str, int],
                  reasons: Sequence[Dict]) -> str:
  """The one-line reason of a run that kept no event: the counts and the
  most frequent reasons of the rejections (the dead letters themselves are
  not committed)."""
  top = sorted(reasons, key=lambda r: (-r["count"], r["source"], r["reason"]))
  why = "; ".join(
      f"{'' if r['source'] == 'events' else r['source'] + ': '}"
      f"{r['count']} x {r['reason']}" for r in top[:3])
  text = (f"no event of {config.events} was kept: "
          f"{counts.get('events_read', 0)} read, "
          f"{counts.get('events_rejected', 0)} rejected")
  if why:
    text += f" ({why}{'; ...' if len(top) > 3 else ''})"
  return " ".join(text.split("\n")) + "; fix the input and run again"


def _write_metadata(parts, root: str, config: PrepareConfig) -> str:
  """The last step: every count, reason and size of the run -> metadata.json.

  It consumes the outputs of every writer, so on runners that compute only
  what the last step needs (the DaskRunner) everything is written. A run
  that cannot make a data set (no event kept, counts that do not add up)
  writes its one-line reason to `FAILED_FILE` instead, which `run` reports
  on any runner (an exception raised here would reach the driver as the
  runner wraps it, and be retried by some).
  """
  counts: Dict[str, int] = collections.Counter()
  reasons = []
  sizes: Dict[str, int] = {}
  for tag, value in parts:
    if tag == COUNT:
      counts[value[0]] += value[1]
    elif tag == "reason":
      reasons.append({"source": value[0], "reason": value[1], "count": value[2]})
    elif tag == "vocab":
      sizes[value[0]] = value[1]
  if "item_id" not in sizes:
    _write_file(f"{root}/{FAILED_FILE}", no_event_kept(config, counts, reasons))
    return root
  try:
    check_accounting(counts)
  except ValueError as error:
    _write_file(f"{root}/{FAILED_FILE}", str(error))
    return root
  counts = dict(counts)
  counts.pop(SAMPLES_BUILT, None)
  counts["rejected_by_reason"] = sorted(reasons,
                                        key=lambda x: (x["source"], x["reason"]))
  _write_file(f"{root}/{schema.METADATA_FILE}", _metadata(config, sizes, counts))
  return root


def _write_vocabularies(catalogue, root: str):
  vocabs = catalogue[0]
  for name, vocab in sorted(vocabs.items()):
    _write_file(vocabulary_path(root, name), vocab.to_tsv())
    yield "vocab", (name, vocab.size)


def _to_one_key(pcoll, label: str):
  """All elements under one key (a global combine without side inputs)."""
  return (pcoll | f"{label}Key" >> beam.Map(lambda x: (None, x))
          | f"{label}Group" >> beam.GroupByKey()
          | f"{label}Values" >> beam.MapTuple(lambda _, xs: list(xs)))


def num_shards_for(config: PrepareConfig) -> int:
  """`config.num_shards`, or one shard per `SHARD_INPUT_BYTES` of events."""
  if config.num_shards:
    return config.num_shards
  total = sum(m.size_in_bytes for m in
              FileSystems.match([config.events])[0].metadata_list)
  return max(1, -(-total // SHARD_INPUT_BYTES))


def build_pipeline(pipeline: beam.Pipeline, config: PrepareConfig,
                   root: Optional[str] = None,
                   range_bytes: int = RANGE_BYTES,
                   progress_seconds: float = PROGRESS_SECONDS) -> None:
  """Adds the whole job to `pipeline`.

  Args:
    pipeline: the Beam pipeline.
    config: the job's options.
    root: directory the files are written to (default `config.output`; `run`
      passes a temporary directory and renames it on success).
    range_bytes: the most bytes of input one read step handles.
    progress_seconds: interval of the progress log lines of each worker.
  """
  cols = config.columns
  if config.samples.protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}, "
                     f"got {config.samples.protocol!r}")
  if config.samples.protocol == "labeled" and not (cols.label or cols.rating):
    raise ValueError("the labeled protocol needs --label_column or "
                     "--rating_column")
  root = (root or config.output).rstrip("/")
  num_shards = num_shards_for(config)
  small = []  # counts, reasons, sizes and files: inputs of the last step
  dead = []

  def header_of(pattern, fmt):
    if fmt in ("csv", "tsv"):
      return read_header(pattern, "\t" if fmt == "tsv" else ",")
    return None

  item_side = []
  if config.items:
    fmt = detect_format(config.items, config.input_format)
    items = (pipeline
             | "ItemRanges" >> beam.Create(_ranges(
                 config.items, fmt, _range_bytes(config.items, range_bytes)))
             | "ReadItems" >> beam.ParDo(ReadItems(
                 cols, fmt, header_of(config.items, fmt)))
             | "GroupItems" >> beam.GroupByKey()
             | "UniqueItems" >> beam.ParDo(UniqueItems()))
    good = items | "GoodItems" >> beam.Filter(_only("item")) | (
        "ItemValues" >> beam.Values())
    item_side = [beam.pvalue.AsDict(good)]
    item_dead = items | "BadItems" >> beam.Filter(_only(DEAD_TAG))
    dead.append(item_dead)
    small.append(items | "ItemCounts" >> beam.Filter(_only(COUNT)))
    small.append(
        _to_one_key(item_dead, "ItemsRejected")
        | "ItemsRejectedCount" >> beam.Map(
            lambda xs: (COUNT, ("items_rejected", len(xs)))))
    small.append(_to_one_key(good, "ItemTable")
                 | "WriteItemTable" >> beam.Map(lambda rows: _write_file(
                     f"{root}/item_table.tsv",
                     item_table_tsv(rows, cols.item_features))
                                                or (FILE, "item_table.tsv")))
  fmt = detect_format(config.events, config.input_format)
  users = (pipeline
           | "EventRanges" >> beam.Create(_ranges(
               config.events, fmt, _range_bytes(config.events, range_bytes)))
           | "ReadEvents" >> beam.ParDo(ReadEvents(
               cols, fmt, header_of(config.events, fmt), progress_seconds),
                                        *item_side)
           | "GroupUser" >> beam.GroupByKey()
           | "CleanUser" >> beam.ParDo(CleanUser(config.max_events_per_user,
                                                 cols)))
  dead.append(users | "UserDead" >> beam.Filter(_only(DEAD_TAG)))
  small.append(users | "ReadCounts" >> beam.Filter(_only(COUNT)))
  catalogue = (users | "Stats" >> beam.Filter(_only(STATS))
               | "StatValues" >> beam.Values()
               | "MergeStats" >> beam.CombineGlobally(_MergeStats())
               .without_defaults()
               | "Catalogue" >> beam.Map(_catalogue, config))
  small.append(catalogue | "WriteVocab" >> beam.FlatMap(_write_vocabularies,
                                                        root))
  if not config.items:
    # Serving looks items up by raw id: the whole item table when one is given
    # (items without events included), else each item's side features as used
    # for negatives.
    small.append(catalogue | "WriteItemTable" >> beam.Map(
        lambda c: _write_file(f"{root}/item_table.tsv",
                              item_table_tsv(c[3], cols.item_features))
        or (FILE, "item_table.tsv")))

  built = (users | "Users" >> beam.Filter(_only(USER))
           | "Samples" >> beam.ParDo(
               BuildUserSamples(config, num_shards, progress_seconds),
               beam.pvalue.AsSingleton(catalogue)))
  dead.append(built | "SampleDead" >> beam.Filter(_only(DEAD_TAG)))
  small.append(built | "UsedCounts" >> beam.Filter(_only(COUNT)))
  small.append(built | "Records" >> beam.Filter(_only(RECORDS))
               | "RecordValues" >> beam.Values()
               | "GroupShard" >> beam.GroupByKey()
               | "WriteShards" >> beam.ParDo(WriteShard(root, num_shards)))

  small.append(tuple(dead) | "AllDead" >> beam.Flatten()
               | "DeadJson" >> beam.MapTuple(
                   lambda _, d: json.dumps(d, sort_keys=True))
               | "DeadShard" >> beam.Map(
                   lambda line: (stable_hash(line) % num_shards, line))
               | "GroupDead" >> beam.GroupByKey()
               | "WriteDead" >> beam.ParDo(WriteDeadLetters(root, num_shards)))
  # The last step; it depends on every writer.
  _ = (_to_one_key(tuple(small) | "AllSmall" >> beam.Flatten(), "Commit")
       | "WriteMetadata" >> beam.Map(_write_metadata, root, config))


def beam_flags() -> Dict[str, argparse.Action]:
  """Every flag that Beam's pipeline options define -> its argparse action:
  those of each PipelineOptions subclass, as Beam itself collects them,
  with the DaskRunner's options registered when Dask is installed."""
  try:
    import apache_beam.runners.dask.dask_runner  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pass
  from apache_beam.options.pipeline_options import _BeamArgumentParser  # pylint: disable=g-import-not-at-top
  parser = _BeamArgumentParser(allow_abbrev=False)
  for cls in PipelineOptions.__subclasses__():
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
  return {flag: action for action in parser._actions  # pylint: disable=protected-access
          for flag in action.option_strings if flag.startswith("--")}


def split_beam_args(argv: Sequence[str], other_flags: Sequence[str] = ()
                    ) -> Tuple[List[str], List[str]]:
  """Splits command-line arguments into the job's and Beam's.

  Each `--flag value` or `--flag=value` goes to the job if `job_parser`
  defines the flag, to Beam if its pipeline options do (`beam_flags`); any
  other flag, or a value that follows no flag, is refused.

  Args:
    argv: the arguments.
    other_flags: flags known to the caller (e.g. the `tfrs-din` command's
      own), offered as suggestions for a mistyped flag.

  Returns:
    (the job's arguments, Beam's), each in the order given.

  Raises:
    ValueError: one line, e.g. "unknown flag --max_histroy; did you mean
      --max_history?".
  """
  job = {flag: action for action in job_parser()._actions  # pylint: disable=protected-access
         for flag in action.option_strings}
  beam_actions = beam_flags()
  job_args: List[str] = []
  beam_args: List[str] = []
  i = 0
  while i < len(argv):
    token = argv[i]
    i += 1
    name, has_value, _ = token.partition("=")
    if not token.startswith("-") or token == "-":
      raise ValueError(f"unexpected argument {token!r}: values follow their "
                       "flag, as in --max_history 50")
    if name in job:
      into, action = job_args, job[name]
    elif name in beam_actions:
      into, action = beam_args, beam_actions[name]
    else:
      hint = did_you_mean(name, set(job) | set(beam_actions)
                          | set(other_flags))
      raise ValueError(
          f"unknown flag {name}{hint}" if hint else
          f"unknown flag {name}: neither an option of the job (--help lists "
          "them) nor a Beam pipeline option")
    into.append(token)
    if has_value or action.nargs == 0:
      continue
    if action.nargs in (None, 1):  # one value, whatever it looks like
      taken = 1 if i < len(argv) else 0
    else:  # "?", "*", "+" or a count: the tokens up to the next flag
      limit = action.nargs if isinstance(action.nargs, int) else (
          1 if action.nargs == "?" else len(argv))
      taken = 0
      while (taken < limit and i + taken < len(argv)
             and not argv[i + taken].startswith("--")):
        taken += 1
    into += argv[i:i + taken]
    i += taken
  return job_args, beam_args


def parse_args(argv: Optional[Sequence[str]] = None
               ) -> Tuple[argparse.Namespace, List[str]]:
  """The job's options and Beam's pipeline options (`split_beam_args`).

  Raises:
    ValueError: an unknown flag (named, with the closest known one), or a
      bad value of one of the job's flags; one line.
  """
  job_args, beam_args = split_beam_args(
      sys.argv[1:] if argv is None else list(argv))
  return job_parser().parse_args(job_args), beam_args


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


OUTPUTS = (schema.METADATA_FILE, "item_table.tsv", "train", "test",
           schema.VOCABULARY_DIR, "dead_letter", SUCCESS_FILE)
_RUNNER_ALIASES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


class PrepareFailed(ValueError):
  """The pipeline failed or made no data set; the output directory was left
  as it was. A ValueError, as callers report bad input: its message is one
  line that names only what still exists."""


def _runner_args(beam_args: Sequence[str]) -> List[str]:
  """`--runner=DaskRunner` -> Beam's fully qualified name (Beam 2.77 does not
  know the short name)."""
  out = []
  for arg in beam_args:
    for short, full in _RUNNER_ALIASES.items():
      if arg in (f"--runner={short}",):
        arg = f"--runner={full}"
    out.append(arg)
  return out


def _check_dask_shuffle(options: PipelineOptions) -> None:
  """Raises ValueError for Dask's disk shuffle on the DaskRunner: Dask bags
  shuffle through partd files that its worker processes do not write safely
  together (on a LocalCluster of 2 processes it lost data in three of six
  1M-event runs; docs/benchmarks.md)."""
  runner = options.get_all_options().get("runner") or ""
  if not runner.endswith("DaskRunner"):
    return
  import dask  # pylint: disable=g-import-not-at-top
  if dask.config.get("dataframe.shuffle.method", None) == "disk":
    raise ValueError(
        "the DaskRunner with Dask's disk shuffle (dataframe.shuffle.method="
        "'disk', e.g. DASK_DATAFRAME__SHUFFLE__METHOD=disk) loses events "
        "across worker processes; unset it to use the task shuffle")


def _mkdirs(path: str) -> None:
  try:
    FileSystems.mkdirs(path)
  except IOError:
    pass  # exists


def _fill_missing_shards(tmp: str, num_shards: int) -> None:
  """Writers only create the shards that got data; the empty ones complete
  the `-of-N` set (an empty gzip TFRecord file, an empty JSON-lines file)."""
  for directory, suffix, compression in (
      ("train", schema.TFRECORD_SUFFIX, CompressionTypes.GZIP),
      ("test", schema.TFRECORD_SUFFIX, CompressionTypes.GZIP),
      ("dead_letter", ".jsonl", CompressionTypes.UNCOMPRESSED)):
    _mkdirs(f"{tmp}/{directory}")
    for shard in range(num_shards):
      path = shard_name(f"{tmp}/{directory}/part", shard, num_shards, suffix)
      if not FileSystems.exists(path):
        FileSystems.create(path, compression_type=compression).close()


def _commit(tmp: str, out: str, num_shards: int) -> None:
  """Moves a finished run from `tmp` into `out`, replacing what is there, and
  writes `_SUCCESS` last. Readers (`load_metadata`) refuse a directory without
  it, so a crash at any point never leaves a data set that looks complete."""
  _fill_missing_shards(tmp, num_shards)
  if FileSystems.exists(f"{out}/{SUCCESS_FILE}"):
    FileSystems.delete([f"{out}/{SUCCESS_FILE}"])
  old = [f"{out}/{p}" for p in OUTPUTS if FileSystems.exists(f"{out}/{p}")]
  if old:
    FileSystems.delete(old)
  sources, targets = [], []
  for name in OUTPUTS[:-1]:
    path = f"{tmp}/{name}"
    if name.endswith((".json", ".tsv")):
      if FileSystems.exists(path):
        sources.append(path)
        targets.append(f"{out}/{name}")
      continue
    _mkdirs(f"{out}/{name}")
    for meta in FileSystems.match([f"{path}/*"])[0].metadata_list:
      sources.append(meta.path)
      targets.append(f"{out}/{name}/{meta.path.rsplit('/', 1)[-1]}")
  FileSystems.rename(sources, targets)
  _write_file(f"{out}/{SUCCESS_FILE}", "")
  FileSystems.delete([tmp])


# Python's third-generation (full) collection runs after this many second-
# generation collections while `run` runs a pipeline (Python's own default:
# 10). The in-memory runners keep every event record and sample payload of
# the job alive, millions of tuples, and each full collection walks them
# all, a sizeable share of the DoFns' CPU at Python's default. The job's
# objects are acyclic (freed by reference counting); younger generations
# are still collected as usual.
FULL_COLLECTION_EVERY = 1000


@contextlib.contextmanager
def fewer_full_collections(every: int = FULL_COLLECTION_EVERY):
  """Within the block, full garbage collections run at most 1/`every` as
  often as second-generation ones; the thresholds are restored after."""
  old = gc.get_threshold()
  gc.set_threshold(old[0], old[1], max(old[2], every))
  try:
    yield
  finally:
    gc.set_threshold(*old)


def run(config: PrepareConfig, beam_args: Sequence[str] = (),
        progress_seconds: float = PROGRESS_SECONDS,
        range_bytes: int = RANGE_BYTES) -> dict:
  """Runs the job to completion and returns the metadata it wrote.

  The inputs are checked first (`beam_jobs.preflight`). The pipeline writes
  into `<output>/_temporary/<run id>/`; only when it has succeeded are the
  files moved into `<output>` and `_SUCCESS` written. If it fails, the
  temporary files are removed and `<output>` is left as it was.

  Args:
    config: the job's options.
    beam_args: Beam pipeline options (`--runner=DaskRunner` is accepted).
    progress_seconds: interval of the progress log lines.
    range_bytes: the most bytes of input one read step handles.

  Raises:
    InputError: an input that cannot be read as asked (before anything runs).
    ValueError: bad options (before anything runs).
    PrepareFailed: the pipeline failed or made no data set.
  """
  if not FileSystems.match([config.events])[0].metadata_list:
    raise InputError(f"--events: no file matches {config.events!r}")
  if config.items and not FileSystems.match([config.items])[0].metadata_list:
    raise InputError(f"--items: no file matches {config.items!r}")
  preflight.check_events(config.events, config.columns, config.input_format,
                         with_item_table=bool(config.items))
  if config.items:
    preflight.check_items(config.items, config.columns, config.input_format)
  out = config.output.rstrip("/")
  existing = [p for p in OUTPUTS if FileSystems.exists(f"{out}/{p}")]
  if existing and not config.overwrite:
    raise ValueError(f"--output: {config.output!r} already holds a prepared data "
                     f"set ({', '.join(existing)}); pass --overwrite to replace it")
  tmp = f"{out}/{TEMPORARY_DIR}/{uuid.uuid4().hex}"
  options = PipelineOptions(_runner_args(beam_args))
  _check_dask_shuffle(options)
  output_existed = FileSystems.exists(out)
  _Progress.reset()
  start = time.monotonic()
  _LOG.info("prepare: %s -> %s (temporary %s)", config.events, out, tmp)
  pipeline = beam.Pipeline(options=options)
  try:
    with fewer_full_collections(), pipeline:  # the pipeline runs on exit
      build_pipeline(pipeline, config, root=tmp, range_bytes=range_bytes,
                     progress_seconds=progress_seconds)
  except Exception as error:  # pylint: disable=broad-except
    _discard(tmp, out, output_existed)
    raise PrepareFailed(
        f"prepare failed, {config.output!r} was left as it was (its partial "
        f"files were removed): {type(error).__name__}: {_one_line(error)}"
    ) from error
  finally:
    client = getattr(getattr(pipeline, "result", None), "client", None)
    if client is not None:  # the DaskRunner's; it would outlive the job
      client.close()
  if not FileSystems.exists(f"{tmp}/{schema.METADATA_FILE}"):
    reason = (_read_text(f"{tmp}/{FAILED_FILE}")
              if FileSystems.exists(f"{tmp}/{FAILED_FILE}") else
              f"the pipeline made no metadata.json: no row of {config.events} "
              "reached its last step")
    _discard(tmp, out, output_existed)
    raise PrepareFailed(f"prepare failed, {config.output!r} was left as it "
                        f"was (its partial files were removed): {reason}")
  _commit(tmp, out, num_shards_for(config))
  _remove_if_empty(f"{out}/{TEMPORARY_DIR}")
  with FileSystems.open(f"{out}/{schema.METADATA_FILE}") as handle:
    metadata = json.loads(handle.read().decode("utf-8"))
  _LOG.info("prepare: done in %.1f s: %s", time.monotonic() - start,
            json.dumps(metadata["counts"], sort_keys=True)[:300])
  return metadata


def _read_text(path: str) -> str:
  with FileSystems.open(path) as handle:
    return handle.read().decode("utf-8")


def _one_line(error: BaseException) -> str:
  """The line of an error's message that says what went wrong: runners
  that run the pipeline elsewhere put the remote traceback in the message,
  whose last line is the original exception."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else repr(error)


def _remove_if_empty(path: str) -> None:
  """Deletes the directory `path` if it exists and holds no file (at any
  depth: another run's temporary files keep it)."""
  if (FileSystems.exists(path)
      and not FileSystems.match([f"{path}/**"])[0].metadata_list):
    FileSystems.delete([path])


def _discard(tmp: str, out: str, output_existed: bool) -> None:
  """Removes a failed run's files: its temporary directory, `_temporary/`
  when no other run uses it, and `out` itself when the run created it."""
  if FileSystems.exists(tmp):
    FileSystems.delete([tmp])
  _remove_if_empty(f"{out}/{TEMPORARY_DIR}")
  if not output_existed:
    _remove_if_empty(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.getLogger().setLevel(logging.WARNING)
  if not _LOG.handlers:  # progress lines, without Beam's INFO chatter
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    _LOG.addHandler(handler)
  _LOG.setLevel(logging.INFO)
  try:
    args, beam_args = parse_args(argv)
    metadata = run(config_from_args(args), beam_args)
  except PrepareFailed as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(json.dumps(metadata["counts"], indent=2, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
