"""Checks of the job's inputs before its pipeline starts.

The pipeline turns each bad row into a dead letter, which is right for a few
bad rows but not for a file that cannot be read as asked: an empty file, a
header without the columns named by the flags, a timestamp format that never
parses. Those are found here, from the header and the first rows of the input
files (read through Beam's FileSystems, so any file system Beam knows
works), and reported as one `InputError` line naming the file, the column or
the line, and what to do.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import difflib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from beam_jobs.events import (UTF8_BOM, Columns, InputError, _parse_json,
                              detect_format, item_table_entries, parse_header,
                              validate)

# Rows read from the start of the input (over its files in name order) to
# check that at least one of them is a valid event or item.
SAMPLE_ROWS = 1000
# The most bytes read from one file for those rows (a file of a few
# enormous lines stops there).
SAMPLE_BYTES = 4 << 20
# The headers of at most this many files are compared with the first one's:
# each costs an open, which on object stores is a request.
HEADER_FILES = 64

# The flag that names each kind of column.
_FLAGS = {"user": "--user_column", "item": "--item_column",
          "timestamp": "--timestamp_column", "label": "--label_column",
          "rating": "--rating_column"}


@dataclasses.dataclass
class _Sample:
  """What the first rows of an input showed."""
  rows: int = 0
  valid: int = 0
  first_bad: Optional[Tuple[str, int, str]] = None  # path, line, reason
  reasons: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  keys: set = dataclasses.field(default_factory=set)  # JSON lines' fields
  complete: bool = True  # every file was read to its end

  def add(self, path: str, line: int, reason: Optional[str]) -> None:
    self.rows += 1
    if reason is None:
      self.valid += 1
      return
    self.reasons[reason] += 1
    if self.first_bad is None:
      self.first_bad = (path, line, reason)


def required_columns(columns: Columns, item_features: bool = True
                     ) -> List[Tuple[str, str]]:
  """(column, flag) of every column the events must have (`item_features`:
  the item side features are in the events, not in an item table)."""
  out = [(columns.user, _FLAGS["user"]), (columns.item, _FLAGS["item"]),
         (columns.timestamp, _FLAGS["timestamp"])]
  if columns.label:
    out.append((columns.label, _FLAGS["label"]))
  elif columns.rating:
    out.append((columns.rating, _FLAGS["rating"]))
  if item_features:
    out += [(name, "--item_features") for name in columns.item_features]
  out += [(name, "--user_features") for name in columns.user_features]
  return out


def check_events(pattern: str, columns: Columns,
                 input_format: Optional[str] = None,
                 with_item_table: bool = False) -> None:
  """Raises `InputError` unless the events of `pattern` can be read as
  `columns` say: files not empty, every named column present, and at least
  one valid event among the first `SAMPLE_ROWS` rows.

  Args:
    pattern: the events' file pattern.
    columns: the columns as the flags name them.
    input_format: the declared format, or None to go by the file extension.
    with_item_table: the item side features come from an item table (the
      events need not have them; items are checked against it later).
  """
  cols = (dataclasses.replace(columns, item_features=()) if with_item_table
          else columns)

  def reason(row: Dict) -> Optional[str]:
    try:
      validate(row, cols)
    except ValueError as error:
      return str(error)
    return None

  _check("--events", pattern, detect_format(pattern, input_format),
         required_columns(columns, item_features=not with_item_table), reason,
         "event", columns.item_features)


def check_items(pattern: str, columns: Columns,
                input_format: Optional[str] = None) -> None:
  """`check_events` for the item table: the item column and the item
  features, and at least one valid item among the first rows."""

  def reason(row: Dict) -> Optional[str]:
    item, letter = item_table_entries(row, columns, columns.item_features)
    return None if item is not None else letter["reason"]

  required = [(columns.item, _FLAGS["item"])] + [
      (name, "--item_features") for name in columns.item_features]
  _check("--items", pattern, detect_format(pattern, input_format), required,
         reason, "item", columns.item_features)


def _check(flag: str, pattern: str, fmt: str,
           required: Sequence[Tuple[str, str]],
           reason: Callable[[Dict], Optional[str]], noun: str,
           item_features: Sequence[str]) -> None:
  """Raises `InputError` for an empty input, missing columns, or no valid
  `noun` among the first rows (`reason`: why a row is not one, or None)."""
  paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
  if not paths:
    raise InputError(f"{flag}: no file matches {pattern!r}")
  where = paths[0] if len(paths) == 1 else f"the {len(paths)} files of {pattern}"
  if fmt in ("csv", "tsv"):
    sample, header, path = _sample_delimited(paths, fmt, reason)
    if header is None:
      raise InputError(
          f"{flag}: {where} {'is' if len(paths) == 1 else 'are'} empty (0 "
          f"bytes); give a {fmt.upper()} file whose first line names the "
          f"columns ({_sep(fmt).join(c for c, _ in required)}) and then one "
          f"{noun} per line")
    _check_columns(flag, path, header, required, item_features, fmt)
  elif fmt == "jsonl":
    sample = _sample_json(paths, reason)
    if sample.rows and sample.keys:
      _check_columns(flag, where, sorted(sample.keys), required, item_features,
                     fmt, in_rows=sample.rows)
  elif fmt == "parquet":
    sample, names, path = _sample_parquet(paths, reason)
    _check_columns(flag, path, names, required, item_features, fmt)
  else:
    raise InputError(f"{flag}: unknown format {fmt!r}; pass --input_format "
                     "csv, tsv, jsonl or parquet")
  if not sample.rows and sample.complete:
    has = "has" if len(paths) == 1 else "have"
    raise InputError(
        f"{flag}: {where} {has} "
        + ("a header but no rows" if fmt in ("csv", "tsv") else "no rows")
        + f"; give at least one {noun}"
        + (", one per line" if fmt != "parquet" else ""))
  if sample.rows and not sample.valid:
    bad_path, line, why = sample.first_bad
    raise InputError(
        f"{flag}: none of the first {sample.rows} rows is a valid {noun} ("
        f"{_top(sample.reasons)}); {bad_path} "
        f"{'row' if fmt == 'parquet' else 'line'} {line}: {why}"
        f"{_hint(why, fmt)}")


def _sep(fmt: str) -> str:
  return "\t" if fmt == "tsv" else ","


def _top(reasons: collections.Counter) -> str:
  return "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))


def _hint(reason: str, fmt: str) -> str:
  """What to do about the first bad row's `reason`."""
  if "cannot parse" in reason and "seconds or ISO-8601" in reason:
    return (": give seconds since the epoch or ISO-8601 times such as "
            "2024-05-01T12:00:00Z (convert the column first)")
  if reason.startswith("expected ") and "columns" in reason:
    other = "tsv" if fmt == "csv" else "csv"
    return (f": check the delimiter (--input_format {other}?) and that fields "
            "holding the delimiter are quoted")
  if "is not a 0/1 label" in reason:
    return ": labels must be 0/1 or true/false (--label_column)"
  if "is not a number" in reason:
    return ": ratings must be numbers (--rating_column)"
  if reason == "line is not valid UTF-8":
    return ": save the file as UTF-8"
  return ""


def _lines(handle, limit: int, first: int = 1
           ) -> Iterator[Tuple[int, object]]:
  """(line number, str or the raw bytes of a line that is not UTF-8) as the
  job splits them ('\\n', one '\\r' before it dropped), blank lines left
  out, up to `limit` bytes; the handle's next line is line `first` (a
  byte-order mark is dropped from line 1)."""
  number = first - 1
  read = 0
  while read < limit:
    raw = handle.readline()
    if not raw:
      return
    read += len(raw)
    number += 1
    if number == 1 and raw.startswith(UTF8_BOM):
      raw = raw[len(UTF8_BOM):]
    raw = raw[:-1] if raw.endswith(b"\n") else raw
    raw = raw[:-1] if raw.endswith(b"\r") else raw
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError:
      yield number, raw
      continue
    if text and not text.isspace():
      yield number, text


def _sample_delimited(paths: Sequence[str], fmt: str, reason
                      ) -> Tuple[_Sample, Optional[List[str]], Optional[str]]:
  """The sample of CSV/TSV files, the first header and its file; checks
  that the headers of the first `HEADER_FILES` files agree."""
  sample = _Sample(complete=len(paths) <= HEADER_FILES)
  delimiter = _sep(fmt)
  header, first = None, None
  for path in paths[:HEADER_FILES]:
    with FileSystems.open(path) as handle:
      raw = handle.readline()
      if not raw:
        continue  # an empty file adds nothing
      names = parse_header(path, raw, delimiter)
      if header is None:
        header, first = names, path
      elif names != header:
        raise InputError(
            f"{path}: its columns ({','.join(names)}) differ from those of "
            f"{first} ({','.join(header)}); every file of a pattern must "
            "have the same header")
      if sample.rows >= SAMPLE_ROWS:
        continue
      for number, line in _lines(handle, SAMPLE_BYTES, first=2):
        sample.add(path, number, _row_reason(line, header, delimiter, reason))
        if sample.rows >= SAMPLE_ROWS:
          break
  return sample, header, first


def _row_reason(line, header: List[str], delimiter: str, reason
                ) -> Optional[str]:
  """Why a CSV/TSV line is not valid (as the job would say), or None."""
  if isinstance(line, bytes):
    return "line is not valid UTF-8"
  try:
    values = next(csv.reader([line], delimiter=delimiter))
  except csv.Error as error:
    return f"cannot split the line: {error}"
  if len(values) != len(header):
    return f"expected {len(header)} columns, got {len(values)}"
  return reason(dict(zip(header, values)))


def _sample_json(paths: Sequence[str], reason) -> _Sample:
  sample = _Sample()
  for path in paths:
    if sample.rows >= SAMPLE_ROWS:
      sample.complete = False
      break
    with FileSystems.open(path) as handle:
      for number, line in _lines(handle, SAMPLE_BYTES):
        if isinstance(line, bytes):
          sample.add(path, number, "line is not valid UTF-8")
        else:
          row = _parse_json(line)[0]
          if "__parse_error__" in row:
            sample.add(path, number, row["__parse_error__"])
          else:
            sample.keys.update(row)
            sample.add(path, number, reason(row))
        if sample.rows >= SAMPLE_ROWS:
          break
  return sample


def _sample_parquet(paths: Sequence[str], reason
                    ) -> Tuple[_Sample, List[str], str]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  sample = _Sample()
  names, first = None, paths[0]
  for path in paths:
    if sample.rows >= SAMPLE_ROWS:
      break
    with FileSystems.open(path) as handle:
      parquet = pq.ParquetFile(handle)
      if names is None:
        names, first = parquet.schema_arrow.names, path
      if not parquet.metadata.num_rows:
        continue
      batch = next(parquet.iter_batches(batch_size=SAMPLE_ROWS - sample.rows))
      for number, row in enumerate(batch.to_pylist(), 1):
        sample.add(path, number, reason(row))
  sample.complete = sample.rows < SAMPLE_ROWS
  return sample, names, first


def _closest(missing: Sequence[str], spare: Sequence[str]) -> Dict[str, str]:
  """For each missing column, the spare column most like it (or none): each
  spare column is given once, best pairs first. An abbreviation (`ts` of
  `timestamp`, `uid` of `user_id`) counts as close."""

  def score(want: str, have: str) -> float:
    want, have = want.lower(), have.lower()
    ratio = difflib.SequenceMatcher(None, want, have).ratio()
    letters = iter(want)
    if have and have[0] == want[0] and all(c in letters for c in have):
      ratio += 0.5
    return ratio

  pairs = sorted(((score(w, h), w, h) for w in missing for h in spare),
                 key=lambda x: -x[0])
  out: Dict[str, str] = {}
  for value, want, have in pairs:
    if value >= 0.6 and want not in out and have not in out.values():
      out[want] = have
  return out


def _check_columns(flag: str, path: str, header: Sequence[str],
                   required: Sequence[Tuple[str, str]],
                   item_features: Sequence[str], fmt: str,
                   in_rows: int = 0) -> None:
  """Raises `InputError` naming every required column the header lacks, the
  closest spare column of each and the flags that would select them."""
  missing = [(c, f) for c, f in required if c not in header]
  if not missing:
    return
  spare = [h for h in header if h not in {c for c, _ in required}]
  closest = _closest([c for c, _ in missing], spare)
  where = (f"the first {in_rows} rows of {path} have" if in_rows
           else f"{path} has")
  names = ", ".join(f"{c!r} ({f})" for c, f in missing)
  text = (f"{flag}: {where} no column {names}; its columns are "
          f"{', '.join(header) if header else 'none'}")
  flags = {}
  features = list(item_features)
  for column, option in missing:
    if column not in closest:
      continue
    if option == "--item_features":
      features[features.index(column)] = closest[column]
      flags[option] = ",".join(features)
    elif option == "--user_features":
      continue  # named in the text; several may be missing
    else:
      flags[option] = closest[column]
  if flags:
    text += ("; rename the columns or pass " +
             " ".join(f"{k} {v}" for k, v in flags.items()))
  else:
    text += "; rename the columns or name them with " + ", ".join(
        sorted({f for _, f in missing}))
  if fmt in ("csv", "tsv") and len(header) == 1:
    for name, char in (("tab", "\t"), ("semicolon", ";"), ("comma", ",")):
      if char in header[0] and char != _sep(fmt):
        text += (f" (the header is one column holding {name}s: the job "
                 "splits CSV on commas and TSV (--input_format tsv) on tabs)")
        break
  raise InputError(text.replace("\n", " "))

