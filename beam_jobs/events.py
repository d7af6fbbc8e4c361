"""Reading raw interaction rows and validating them into events.

A bad row never stops the job: it becomes a dead letter `{"source", "reason",
"row"}` and is counted.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

DEAD = "dead_letter"
# The byte-order mark that spreadsheets and some editors write at the start of
# a UTF-8 file; it is not part of the first column's name or the first row.
UTF8_BOM = b"\xef\xbb\xbf"


class InputError(ValueError):
  """An input file the job cannot read as asked (found before it runs); the
  message is one line naming the file, column or row and what to do."""


@dataclasses.dataclass
class Columns:
  """Column names of the input and how labels are derived.

  Args:
    user: user id column.
    item: item id column.
    timestamp: seconds since the epoch, or ISO-8601.
    label: optional explicit 0/1 label column.
    rating: optional rating column; rating >= rating_threshold is positive.
    item_features: item side features (e.g. category_id), inline in the events
      or in the item table.
    user_features: extra user features (categorical), inline in the events.
  """
  user: str = "user_id"
  item: str = "item_id"
  timestamp: str = "timestamp"
  label: Optional[str] = None
  rating: Optional[str] = None
  rating_threshold: float = 4.0
  item_features: Sequence[str] = ("category_id",)
  user_features: Sequence[str] = ()


@dataclasses.dataclass(frozen=True)
class Event:
  """A validated interaction; ids are the raw strings of the log."""
  user: str
  item: str
  timestamp: float
  label: int
  item_features: Tuple[Tuple[str, str], ...]
  user_features: Tuple[Tuple[str, str], ...]

  def sort_key(self):
    return (self.timestamp, self.item, self.label, self.item_features)


# (timestamp, item, label, item_features, user_features) of one event; the user
# is the key it travels under. A tuple of primitives is encoded by Beam's coder
# without pickling, and its natural order extends `Event.sort_key` to a total
# order (so the order of a user's events never depends on the runner).
EventRecord = Tuple[float, str, int, Tuple[Tuple[str, str], ...],
                    Tuple[Tuple[str, str], ...]]


def event_record(event: Event) -> EventRecord:
  """The `EventRecord` of an `Event` (its user is left out)."""
  return (event.timestamp, event.item, event.label, event.item_features,
          event.user_features)


def record_row(user: str, record: EventRecord) -> Dict:
  """The dead-letter row of an event: `dataclasses.asdict` of its `Event`."""
  return {"user": user, "item": record[1], "timestamp": record[0],
          "label": record[2], "item_features": record[3],
          "user_features": record[4]}


def dead_letter(source: str, reason: str, row) -> Dict:
  return {"source": source, "reason": reason, "row": row}


def parse_timestamp(value) -> float:
  """Seconds since the epoch from a number or an ISO-8601 string."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  text = str(value).strip()
  try:
    return float(text)
  except ValueError:
    pass
  parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
  if parsed.tzinfo is None:
    parsed = parsed.replace(tzinfo=datetime.timezone.utc)
  return parsed.timestamp()


def _text(row: Dict, name: str) -> str:
  value = row.get(name)
  if value is None or (isinstance(value, float) and value != value):
    raise ValueError(f"missing field {name!r}")
  text = str(value).strip()
  if not text:
    raise ValueError(f"missing field {name!r}")
  if isinstance(value, float) and value.is_integer():
    text = str(int(value))  # Parquet/JSON numbers: 12.0 -> "12"
  return text


def validate(row: Dict, columns: Columns, item_table: Optional[Dict] = None
             ) -> Event:
  """Turns a row into an `Event`; raises ValueError naming the field."""
  user = _text(row, columns.user)
  item = _text(row, columns.item)
  raw_ts = row.get(columns.timestamp)
  if raw_ts is None or str(raw_ts).strip() == "":
    raise ValueError(f"missing field {columns.timestamp!r}")
  try:
    timestamp = parse_timestamp(raw_ts)
  except ValueError:
    raise ValueError(f"field {columns.timestamp!r}: cannot parse {raw_ts!r} as "
                     "seconds or ISO-8601") from None
  label = 1
  if columns.label:
    raw = _text(row, columns.label)
    if raw not in ("0", "1", "0.0", "1.0", "true", "false", "True", "False"):
      raise ValueError(f"field {columns.label!r}: {raw!r} is not a 0/1 label")
    label = int(raw in ("1", "1.0", "true", "True"))
  elif columns.rating:
    raw = _text(row, columns.rating)
    try:
      label = int(float(raw) >= columns.rating_threshold)
    except ValueError:
      raise ValueError(f"field {columns.rating!r}: {raw!r} is not a number"
                       ) from None
  if item_table is not None:
    if item not in item_table:
      raise ValueError(f"field {columns.item!r}: unknown item {item!r} "
                       "(not in the item table)")
    item_feats = item_table[item]
  else:
    item_feats = tuple((name, _text(row, name))
                       for name in columns.item_features)
  user_feats = tuple((name, _text(row, name)) for name in columns.user_features)
  return Event(user, item, timestamp, label, item_feats, user_feats)


class ValidateEvents(beam.DoFn):
  """Rows -> `Event`s (main output) and dead letters (tag `dead_letter`)."""

  def __init__(self, columns: Columns):
    self._columns = columns
    self._read = beam.metrics.Metrics.counter("events", "read")
    self._rejected = beam.metrics.Metrics.counter("events", "rejected")

  def process(self, row, item_table=None):
    self._read.inc()
    if isinstance(row, dict) and "__parse_error__" in row:
      self._rejected.inc()
      yield beam.pvalue.TaggedOutput(
          DEAD, dead_letter("events", row["__parse_error__"], row["__line__"]))
      return
    try:
      yield validate(row, self._columns, item_table)
    except ValueError as error:
      self._rejected.inc()
      yield beam.pvalue.TaggedOutput(DEAD, dead_letter("events", str(error),
                                                       _jsonable(row)))


def _jsonable(row):
  return {str(k): (v if isinstance(v, (str, int, float, bool, type(None)))
                   else str(v)) for k, v in row.items()}


class RowParser:
  """Lines or rows of an input file -> `(user, EventRecord)` or dead letters.

  Does what `_ParseDelimited`/`_parse_json` followed by `validate` do, with
  the same results and the same dead letters, but for CSV/TSV lines without
  quotes it splits and validates by column position instead of building a
  dict per row (a row that fails is re-validated through `validate` so that
  its dead letter is exactly the reference one).

  Args:
    columns: the input's columns.
    fmt: "csv", "tsv", "jsonl" or "parquet" (rows given as dicts).
    header: column names of a CSV/TSV file.
  """

  def __init__(self, columns: Columns, fmt: str,
               header: Optional[List[str]] = None):
    self.columns = columns
    self.fmt = fmt
    self.header = header
    self.delimiter = "\t" if fmt == "tsv" else ","
    # What a plain block (`is_plain`) may hold: printable ASCII but '"',
    # the delimiter and line ends (bytes, for `bytes.translate`).
    self._plain_bytes = (
        bytes(sorted((set(range(0x21, 0x7F)) | {0x0A, 0x0D, ord(self.delimiter)})
                     - {ord('"')}))
        if fmt in ("csv", "tsv") and header is not None else None)
    if header is not None:
      position = {name: i for i, name in enumerate(header)}  # last one wins
      pick = lambda name: position.get(name) if name else None
      self._user, self._item = pick(columns.user), pick(columns.item)
      self._ts = pick(columns.timestamp)
      self._label = pick(columns.label)
      self._rating = pick(columns.rating)
      self._item_features = [(n, pick(n)) for n in columns.item_features]
      self._user_features = [(n, pick(n)) for n in columns.user_features]

  def parse(self, line_or_row, item_table: Optional[Dict] = None):
    """`(user, EventRecord)`, `(None, dead letter)`, or None for a blank line."""
    if self.fmt == "parquet":
      return self._validate_row(line_or_row, item_table)
    line = line_or_row
    if not line or line.isspace():
      return None
    if self.fmt == "jsonl":
      rows = _parse_json(line)
      row = rows[0]
      if "__parse_error__" in row:
        return None, dead_letter("events", row["__parse_error__"], row["__line__"])
      return self._validate_row(row, item_table)
    if '"' in line or "\r" in line or "\x00" in line:
      values = next(csv.reader([line], delimiter=self.delimiter))
    else:
      values = line.split(self.delimiter)
    return self._from_values(values, line, item_table, strip=True)

  def is_plain(self, text: str) -> bool:
    """Whether every line of a CSV/TSV block `text` splits on the delimiter
    alone: printable ASCII other than space and '"' (no quoting, no field
    with whitespace around it), and line ends '\\n' or '\\r\\n'."""
    if self._plain_bytes is None or not text.isascii():
      return False
    raw = text.encode("ascii")
    if raw.translate(None, self._plain_bytes):  # a byte that is not allowed
      return False
    returns = raw.count(b"\r")
    return returns == 0 or returns == raw.count(b"\r\n")  # no lone '\r'

  def parse_plain(self, line: str, item_table: Optional[Dict] = None):
    """`parse` for a line of a block that `is_plain`: the same results,
    without the checks and strips such a line cannot need."""
    if not line:
      return None
    return self._from_values(line.split(self.delimiter), line, item_table,
                             strip=False)

  def _from_values(self, values: List[str], line: str,
                   item_table: Optional[Dict], strip: bool):
    """A line's split fields -> `parse`'s result (`strip`: the fields may
    have whitespace around them)."""
    if len(values) != len(self.header):
      return None, dead_letter("events", f"expected {len(self.header)} columns,"
                               f" got {len(values)}", line)
    try:
      return self._fast([value.strip() for value in values] if strip
                        else values, item_table)
    except (ValueError, TypeError, LookupError):
      return self._validate_row(dict(zip(self.header, values)), item_table)

  def _validate_row(self, row: Dict, item_table: Optional[Dict]):
    try:
      event = validate(row, self.columns, item_table)
    except ValueError as error:
      return None, dead_letter("events", str(error), _jsonable(row))
    return event.user, event_record(event)

  def _fast(self, values: List[str], item_table: Optional[Dict]):
    """`validate` for a split line whose fields are stripped; raises on
    anything unusual (the caller then takes the reference path)."""
    user = values[self._user]
    item = values[self._item]
    if not user or not item:
      raise ValueError("missing field")
    timestamp = float(values[self._ts])  # ISO-8601 and errors: reference path
    cols = self.columns
    label = 1
    if cols.label:
      raw = values[self._label]
      if raw in ("1", "1.0", "true", "True"):
        label = 1
      elif raw in ("0", "0.0", "false", "False"):
        label = 0
      else:
        raise ValueError("label")
    elif cols.rating:
      raw = values[self._rating]
      if not raw:
        raise ValueError("rating")
      label = int(float(raw) >= cols.rating_threshold)
    if item_table is not None:
      item_feats = item_table[item]
    else:
      item_feats = tuple([(n, _nonempty(values[i]))
                          for n, i in self._item_features])
    user_feats = (tuple([(n, _nonempty(values[i]))
                         for n, i in self._user_features])
                  if self._user_features else ())
    return user, (timestamp, item, label, item_feats, user_feats)


def _nonempty(text: str) -> str:
  if not text:
    raise ValueError("empty")
  return text


# Reading ---------------------------------------------------------------------
def detect_format(pattern: str, declared: Optional[str] = None) -> str:
  if declared:
    return declared
  lowered = pattern.lower().rstrip("*")
  for suffix, fmt in ((".parquet", "parquet"), (".jsonl", "jsonl"),
                      (".json", "jsonl"), (".tsv", "tsv"), (".inter", "tsv"),
                      (".item", "tsv"), (".csv", "csv")):
    if lowered.endswith(suffix) or (suffix + ".") in lowered:
      return fmt
  return "csv"


def read_header(pattern: str, delimiter: str) -> List[str]:
  """Column names from the first matching file that is not empty; `name:type`
  becomes `name` and a UTF-8 byte-order mark is dropped."""
  match = FileSystems.match([pattern])[0].metadata_list
  if not match:
    raise InputError(f"no file matches {pattern!r}")
  for path in sorted(m.path for m in match):
    with FileSystems.open(path) as handle:
      raw = handle.readline()  # the header alone: later lines may be bad
    if raw:
      return parse_header(path, raw, delimiter)
  raise InputError(f"{pattern}: every matching file is empty (0 bytes); give "
                   "a file whose first line names the columns")


def parse_header(path: str, raw: bytes, delimiter: str) -> List[str]:
  """Column names of the raw first line of `path` (see `read_header`)."""
  if raw.startswith(UTF8_BOM):
    raw = raw[len(UTF8_BOM):]
  try:
    first = raw.decode("utf-8")
  except UnicodeDecodeError as error:
    raise InputError(f"{path}: the header line is not valid UTF-8 "
                     f"({error.reason} at byte {error.start}); save the file "
                     "as UTF-8") from None
  first = first.rstrip("\r\n")
  if not first.strip():
    return []
  return [name.strip().split(":")[0]
          for name in next(csv.reader([first], delimiter=delimiter))]


class _ParseDelimited(beam.DoFn):

  def __init__(self, header: List[str], delimiter: str):
    self._header = header
    self._delimiter = delimiter

  def process(self, line: str):
    if not line.strip():
      return
    values = next(csv.reader([line], delimiter=self._delimiter))
    if len(values) != len(self._header):
      yield {"__parse_error__": f"expected {len(self._header)} columns, got "
                                f"{len(values)}", "__line__": line}
      return
    yield dict(zip(self._header, values))


def _parse_json(line: str):
  if not line.strip():
    return []
  try:
    value = json.loads(line)
  except json.JSONDecodeError as error:
    return [{"__parse_error__": f"invalid JSON: {error.msg}", "__line__": line}]
  if not isinstance(value, dict):
    return [{"__parse_error__": "a JSON line must be an object",
             "__line__": line}]
  return [value]


def read_rows(pipeline, pattern: str, fmt: str, label: str):
  """Reads rows as dicts; lines that cannot be split carry `__parse_error__`."""
  if fmt == "parquet":
    return pipeline | f"Read{label}" >> beam.io.ReadFromParquet(pattern)
  if fmt == "jsonl":
    return (pipeline | f"Read{label}" >> beam.io.ReadFromText(pattern)
            | f"Json{label}" >> beam.FlatMap(_parse_json))
  delimiter = "\t" if fmt == "tsv" else ","
  header = read_header(pattern, delimiter)
  return (pipeline
          | f"Read{label}" >> beam.io.ReadFromText(pattern, skip_header_lines=1)
          | f"Split{label}" >> beam.ParDo(_ParseDelimited(header, delimiter)))


def item_table_entries(row: Dict, columns: Columns, features: Iterable[str]):
  """Item-table row -> (item, features) or a dead letter."""
  try:
    item = _text(row, columns.item)
    return item, tuple((name, _text(row, name)) for name in features)
  except ValueError as error:
    return None, dead_letter("items", str(error), _jsonable(row))
