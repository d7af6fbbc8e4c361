"""The fast path of the Beam job writes the bytes the reference path wrote.

* `FastUserSampleBuilder.encode` against `UserSampleBuilder.build` (one
  `tf.train.Example` message per sample), user by user, in order;
* `NegativeSampler.sample_calls` against a loop of `sample`;
* `RowParser` against `_ParseDelimited` + `validate`;
* whole runs against digests of what the job wrote before the fast path
  (commit aa53a77, the last one with the reference pipeline).
"""

import dataclasses
import glob
import hashlib
import json
import os
import re

import numpy as np
import pytest

from beam_jobs import encoding, prepare
from beam_jobs.events import (Columns, RowParser, _ParseDelimited, dead_letter,
                              event_record, validate, _jsonable)
from beam_jobs.samples import (FastUserSampleBuilder, SampleOptions,
                               UserSampleBuilder)
from beam_jobs.sampling import NegativeSampler, user_rng
from beam_jobs.vocabulary import Vocabulary


def _random_world(rng, users=25, items=40, with_user_feature=True):
  events = {}
  for u in range(users):
    n = int(rng.integers(1, 30))
    evs = []
    for t in range(n):
      item = f"i{int(rng.zipf(1.5)) % items}"
      evs.append(validate({"user_id": f"u{u}", "item_id": item,
                           "category_id": f"c{hash(item) % 5}",
                           "age": f"a{u % 3}", "timestamp": str(t),
                           "clicked": str(int(rng.random() < 0.7))},
                          Columns(label="clicked",
                                  user_features=("age",) if with_user_feature
                                  else ())))
    events[f"u{u}"] = evs
  counts = {}
  for evs in events.values():
    for e in evs:
      for name, value in [("user_id", e.user), ("item_id", e.item)] + list(
          e.item_features + e.user_features):
        counts.setdefault(name, {}).setdefault(value, 0)
        counts[name][value] += 1
  vocabs = {n: Vocabulary.from_counts(n, c.items(), min_count=2 if n == "item_id"
                                      else 1) for n, c in counts.items()}
  side = {}
  for evs in events.values():
    for e in evs:
      idx = vocabs["item_id"].index(e.item)
      side[idx] = (vocabs["category_id"].index(e.item_features[0][1]),)
  sampler = NegativeSampler([vocabs["item_id"].index(i)
                             for i in vocabs["item_id"].ids],
                            vocabs["item_id"].counts, 0.75)
  return events, vocabs, side, sampler


@pytest.mark.parametrize("protocol, num_negatives, aux, history, user_feature", [
    ("next_item", 1, True, 50, False), ("next_item", 3, True, 3, True),
    ("next_item", 0, False, 5, True), ("labeled", 1, True, 4, True),
    ("labeled", 1, False, 200, False)])
def test_encode_writes_the_bytes_of_the_reference_builder(
    protocol, num_negatives, aux, history, user_feature):
  rng = np.random.default_rng(3)
  events, vocabs, side, sampler = _random_world(rng,
                                                with_user_feature=user_feature)
  options = SampleOptions(protocol=protocol, max_history=history,
                          num_negatives=num_negatives, aux_negatives=aux,
                          test_fraction=0.3, seed=5)
  users = ("age",) if user_feature else ()
  reference = UserSampleBuilder(options, vocabs, ["category_id"], users,
                                sampler, side)
  fast = FastUserSampleBuilder(options, vocabs, ["category_id"], users,
                               sampler, side)
  total = 0
  for user, evs in events.items():
    expected = {"train": [], "test": []}
    for split, example in reference.build(user, evs):
      expected[split].append(encoding.tfrecord(example))
    got = fast.encode(user, [event_record(e) for e in evs])
    want = {s: (len(r), b"".join(r)) for s, r in expected.items() if r}
    assert got == want, user
    total += sum(n for n, _ in got.values())
  assert total > 50


def test_tfrecord_frames_match_beams_writer():
  from apache_beam.io.tfrecordio import _TFRecordUtil
  import io
  for record in (b"", b"x", bytes(range(256)) * 3):
    handle = io.BytesIO()
    _TFRecordUtil.write_record(handle, record)
    assert encoding.tfrecord(record) == handle.getvalue()
  for value in (0, 1, 127, 128, 300, 2**40):
    assert encoding.varint(value) == encoding.packed_offsets([value])[0]


def test_entry_header_plus_packed_ids_is_the_entry():
  import tensorflow as tf
  enc = encoding.ExampleEncoder(["hist_item_id", "label"])
  for n_ids in (0, 1, 40, 50, 3000, 70000):
    values = list(range(n_ids, 2 * n_ids))
    packed = encoding.packed_offsets(values)[0]
    entry = enc.entry("hist_item_id", encoding.int64_feature(packed))
    assert enc.int64_entry_header("hist_item_id", len(packed)) + packed == entry
    example = enc.example([entry, enc.entry("label", encoding.float_feature([1.0]))])
    parsed = tf.train.Example.FromString(example).features.feature
    assert list(parsed["hist_item_id"].int64_list.value) == values


def test_sample_calls_equals_a_loop_of_sample_with_retries():
  sampler = NegativeSampler(list(range(2, 12)), [50, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                            power=1.0)
  for seed in range(30):
    exclude = {2, 3, 4} if seed % 2 else {2}  # 2 is the popular item: retries
    for size, calls in ((1, 7), (3, 4), (0, 2), (5, 1)):
      loop_rng, batch_rng = (np.random.default_rng(seed),
                             np.random.default_rng(seed))
      expected = [sampler.sample(loop_rng, exclude, size) for _ in range(calls)]
      assert sampler.sample_calls(batch_rng, exclude, size, calls) == expected
  with pytest.raises(ValueError, match="every item of the vocabulary"):
    sampler.sample_calls(np.random.default_rng(0), set(range(2, 12)), 1, 1)
  assert sampler.sample_calls(np.random.default_rng(0), set(range(2, 12)),
                              1, 0) == []


def test_row_parser_agrees_with_split_and_validate():
  header = ["user_id", "item_id", "category_id", "timestamp", "rating"]
  cols = Columns(rating="rating")
  lines = ["u1,a,c,1,5", "u1, a ,c,2.5,3", "u2,,c,1,5", "u3,b,c,notatime,5",
           "u3,b,c,2020-01-01T00:00:00Z,5", "u4,b,,1,5", "u5,b,c,1,x",
           "u6,b,c,1", 'u7,"b,c",c,1,5', '"u8",b,c,1,4', "u9,b,c,1,5,6",
           "u10,b,c, 7 ,4.0", "u11,b,c,,4", "u12,b,c,1,", "   ", "u13,b,c,nan,4"]
  parser = RowParser(cols, "csv", header)
  split = _ParseDelimited(header, ",")
  for line in lines:
    rows = list(split.process(line))
    got = parser.parse(line)
    if not rows:
      assert got is None
      continue
    row = rows[0]
    if "__parse_error__" in row:
      want = (None, dead_letter("events", row["__parse_error__"], line))
    else:
      try:
        event = validate(row, cols)
        want = (event.user, event_record(event))
      except ValueError as error:
        want = (None, dead_letter("events", str(error), _jsonable(row)))
    assert repr(got) == repr(want), line  # repr: nan == nan


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_plain_blocks_parse_as_every_line_does(fmt):
  header = ["user_id", "item_id", "category_id", "timestamp", "rating"]
  parser = RowParser(Columns(rating="rating"), fmt, header)
  d = parser.delimiter
  plain = ["u1,a,c,1,5", "u2,,c,1,5", "u3,b,c,notatime,5",
           "u3,b,c,2020-01-01T00:00:00Z,5", "u4,b,,1,5", "u5,b,c,1,x",
           "u6,b,c,1", "u9,b,c,1,5,6", "u11,b,c,,4", "u12,b,c,1,", "",
           "u13,b,c,nan,4", "u14,b,c,1e3,4.5", "u15,b,c,1_000,2"]
  plain = [line.replace(",", d) for line in plain]
  for end in ("\n", "\r\n"):
    text = end.join(plain) + end
    assert parser.is_plain(text), end
    for line in plain:
      assert repr(parser.parse_plain(line)) == repr(parser.parse(line)), line
  # What the plain path must not see: each makes its block not plain.
  for odd in (" a", "a\t" if fmt == "csv" else "a b", '"a"', "\u00e9",
              "a\rb", "a\x00", "a\x0b", "a\x1f", "\u3000"):
    text = "\n".join(plain[:2] + [plain[0].replace("a", odd, 1)]) + "\n"
    assert not parser.is_plain(text), repr(odd)
  # Every character, against the rule written as a regular expression.
  rule = re.compile(f"[^!-~\n\r{re.escape(d)}]|\"|\r(?!\n)")
  for code in list(range(0x100)) + [0x3000, 0x1F600]:
    for text in (f"u{chr(code)}1{d}a\n", f"u1{d}a{chr(code)}", chr(code)):
      assert parser.is_plain(text) == (rule.search(text) is None), (code, text)
  assert not RowParser(Columns(), "jsonl").is_plain('{"user_id": "u"}\n')


# Whole runs -----------------------------------------------------------------
def _events_log(tmp_path):
  rng = np.random.default_rng(11)
  lines = ["user_id,item_id,category_id,age,clicked,timestamp"]
  for _ in range(600):
    item = int(rng.zipf(1.4)) % 80
    lines.append(f"u{rng.integers(40)},i{item},c{item % 9},a{rng.integers(3)},"
                 f"{int(rng.random() < 0.8)},{rng.integers(500)}")
  lines += ["u1,,c1,a1,1,3", "u2,i1,c1,a1,2,3", "u3,i1,c1,a1,1,never",
            "u4,i1,c1,a1,1", "u5,i2,c2,a1,1,1970-01-01T00:00:09Z"]
  path = tmp_path / "events.csv"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _digest(out):
  """sha256 of each output, records as a sorted multiset (the order of the
  records in a file is not part of the contract), metadata without paths."""
  import tensorflow as tf
  d = {}
  for split in ("train", "test"):
    records = []
    for path in sorted(glob.glob(os.path.join(out, split, "*.tfrecord.gz"))):
      records += [r.numpy() for r in
                  tf.data.TFRecordDataset(path, compression_type="GZIP")]
    d[split] = hashlib.sha256(b"".join(sorted(records))).hexdigest()[:16]
  for rel in ["item_table.tsv"] + sorted(
      os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "vocab", "*"))):
    with open(os.path.join(out, rel), "rb") as f:
      d[rel] = hashlib.sha256(f.read()).hexdigest()[:16]
  with open(os.path.join(out, "metadata.json")) as f:
    meta = json.load(f)
  meta["options"]["output"] = meta["options"]["events"] = None
  d["metadata"] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()
                                 ).hexdigest()[:16]
  dead = []
  for path in glob.glob(os.path.join(out, "dead_letter", "*")):
    with open(path) as f:
      dead += f.read().splitlines()
  d["dead_letter"] = hashlib.sha256("\n".join(sorted(dead)).encode()
                                    ).hexdigest()[:16]
  return d


RUNS = {
    "next_item": dict(columns=Columns(user_features=("age",)),
                      samples=SampleOptions(max_history=4, num_negatives=2,
                                            seed=3),
                      negative_power=0.75, max_events_per_user=20),
    "labeled": dict(columns=Columns(label="clicked", item_features=()),
                    samples=SampleOptions(protocol="labeled", max_history=6,
                                          test_fraction=0.3),
                    min_count=2),
}
# Written by the reference pipeline (commit aa53a77) on `_events_log`.
GOLDEN = {
    "labeled": {
        "dead_letter": "cc387798551e4a92",
        "item_table.tsv": "0ca14c8223174b79",
        "metadata": "fafc35b9f4c19683",
        "test": "71888f471ad017a4",
        "train": "f343df492c6d3277",
        "vocab/item_id.tsv": "5cf2c86561c601b3",
        "vocab/user_id.tsv": "c5ea9ae75c071047",
    },
    "next_item": {
        "dead_letter": "5aef5c33e27e22b5",
        "item_table.tsv": "c845755793589ee8",
        "metadata": "919606e0d316ff69",
        "test": "bf6fd9dd23c9d7be",
        "train": "537794044ade58b8",
        "vocab/age.tsv": "ee068b64819248f8",
        "vocab/category_id.tsv": "e1b36835dfb5c000",
        "vocab/item_id.tsv": "97ec96ba92758f38",
        "vocab/user_id.tsv": "2f9a72f6fba36cce",
    },
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_job_writes_the_bytes_of_the_reference_pipeline(tmp_path, name):
  config = prepare.PrepareConfig(events=_events_log(tmp_path),
                                 output=str(tmp_path / "out"), **RUNS[name])
  prepare.run(config)
  assert _digest(config.output) == GOLDEN[name]


def test_parquet_and_jsonl_inputs_give_the_csv_output(tmp_path):
  """Parquet row groups and JSON lines are read by the same range reader
  (Beam's Read transforms are not used: the DaskRunner cannot run them)."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  rng = np.random.default_rng(2)
  rows = [{"user_id": f"u{rng.integers(20)}", "item_id": f"i{rng.integers(30)}",
           "category_id": f"c{rng.integers(4)}", "timestamp": int(t)}
          for t in range(300)]
  csv_path = tmp_path / "events.csv"
  csv_path.write_text("user_id,item_id,category_id,timestamp\n" + "".join(
      f"{r['user_id']},{r['item_id']},{r['category_id']},{r['timestamp']}\n"
      for r in rows))
  pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "events.parquet"),
                 row_group_size=70)  # several row groups = several ranges
  (tmp_path / "events.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
  digests = {}
  for name in ("events.csv", "events.parquet", "events.jsonl"):
    config = prepare.PrepareConfig(events=str(tmp_path / name),
                                   output=str(tmp_path / f"out_{name}"))
    meta = prepare.run(config)
    digests[name] = {k: v for k, v in _digest(config.output).items()
                     if k not in ("metadata", "dead_letter")}
    assert meta["counts"]["events_used"] == 300
  assert digests["events.parquet"] == digests["events.csv"]
  assert digests["events.jsonl"] == digests["events.csv"]
  assert meta["counts"]["rejected_by_reason"][0]["reason"].startswith(
      "invalid JSON")
