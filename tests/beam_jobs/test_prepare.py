"""The Beam job on small hand-made logs: exact samples, negatives, counts."""

import dataclasses
import gc
import glob
import gzip
import json
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import prepare
from beam_jobs.events import Columns, validate
from beam_jobs.samples import SampleOptions
from beam_jobs.vocabulary import Vocabulary
from tfrs_din.data.pipeline import load_feature_spec, make_dataset

EVENTS = """user_id,item_id,category_id,timestamp
u1,a,c1,1
u1,c,c1,3
u1,b,c2,2
u1,d,c2,1970-01-01T00:00:04Z
u2,a,c1,5
u2,b,c2,6
u2,b,c2,6
u3,,c1,7
u3,x,c1,notatime
u4,a,c1,1,extra
u5,e,c3,1
u5,f,c3,2
u5,g,c4,3
u5,h,c4,4
u6,a,c1,1
"""


def _write(tmp_path, text, name="events.csv"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _config(tmp_path, events, **sample_options):
  return prepare.PrepareConfig(
      events=events, output=str(tmp_path / "out"),
      samples=SampleOptions(**dict(dict(max_history=2), **sample_options)))


def _read_examples(out, split):
  records = []
  for path in sorted(glob.glob(os.path.join(out, split, "*.tfrecord.gz"))):
    records += [r.numpy() for r in
                tf.data.TFRecordDataset(path, compression_type="GZIP")]
  return records


def _decode(record):
  ex = tf.train.Example.FromString(record)
  return {k: (list(v.int64_list.value) or list(v.float_list.value))
          for k, v in ex.features.feature.items()}


def _vocab(out, name):
  with open(os.path.join(out, "vocab", f"{name}.tsv")) as f:
    return Vocabulary.from_tsv(name, f.read())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("prep")
  config = _config(tmp_path, _write(tmp_path, EVENTS), num_negatives=2)
  metadata = prepare.run(config)
  return config.output, metadata


def test_counts_add_up_and_dead_letters_carry_reasons(prepared):
  out, metadata = prepared
  counts = metadata["counts"]
  assert counts["events_read"] == 15
  assert counts["events_rejected"] == 4
  assert counts["events_used"] == 11
  assert counts["events_read"] == counts["events_used"] + counts["events_rejected"]
  lines = []
  for path in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")):
    lines += [json.loads(l) for l in open(path)]
  reasons = sorted(d["reason"] for d in lines)
  assert reasons == sorted([
      "duplicate event (same user, item and timestamp)",
      "expected 4 columns, got 5",
      "field 'timestamp': cannot parse 'notatime' as seconds or ISO-8601",
      "missing field 'item_id'"])
  assert sum(r["count"] for r in counts["rejected_by_reason"]) == 4


def test_item_table_lists_each_item_with_its_raw_side_features(prepared):
  out, _ = prepared
  with open(os.path.join(out, "item_table.tsv")) as f:
    text = f.read()
  # Sorted by item id; the rejected row's item x is absent.
  assert text == ("item_id\tcategory_id\na\tc1\nb\tc2\nc\tc1\nd\tc2\n"
                  "e\tc3\nf\tc3\ng\tc4\nh\tc4\n")
  assert prepare.item_table_tsv([], ()) == "item_id\n"


def test_next_item_protocol_gives_exact_samples(prepared):
  out, metadata = prepared
  items, users = _vocab(out, "item_id"), _vocab(out, "user_id")
  train = [_decode(r) for r in _read_examples(out, "train")]
  test = [_decode(r) for r in _read_examples(out, "test")]
  # u1: a(1) b(2) c(3) d(4): train targets b, c; test target d. u2: a b -> test b.
  # u5: e f g h -> train f, g; test h. u6 has one event: no sample.
  def positives(samples, user):
    return sorted((tuple(s["hist_item_id"]), s["item_id"][0]) for s in samples
                  if s["user_id"] == [users.index(user)] and s["label"] == [1.0])
  i = items.index
  assert positives(train, "u1") == sorted([((i("a"),), i("b")),
                                           ((i("a"), i("b")), i("c"))])
  assert positives(test, "u1") == [((i("b"), i("c")), i("d"))]  # max_history=2
  assert positives(test, "u2") == [((i("a"),), i("b"))]
  assert positives(train, "u2") == []
  assert positives(train, "u6") == positives(test, "u6") == []
  assert metadata["counts"]["samples_train"] == 4 * 3  # u1, u5: 2 targets x 3
  assert metadata["counts"]["samples_test"] == 3 * 3   # u1, u2, u5


def test_negatives_never_come_from_the_users_items(prepared):
  out, _ = prepared
  items = _vocab(out, "item_id")
  users = _vocab(out, "user_id")
  user_items = {"u1": "abcd", "u2": "ab", "u5": "efgh"}
  for split in ("train", "test"):
    for s in map(_decode, _read_examples(out, split)):
      user = users.ids[s["user_id"][0] - 2]
      own = {items.index(x) for x in user_items[user]}
      assert len(s["neg_hist_item_id"]) == len(s["hist_item_id"])
      assert not own & set(s["neg_hist_item_id"])
      if s["label"] == [0.0]:
        assert s["item_id"][0] not in own


def test_item_side_features_follow_sampled_negatives(prepared):
  out, _ = prepared
  items, cats = _vocab(out, "item_id"), _vocab(out, "category_id")
  category_of = {"a": "c1", "b": "c2", "c": "c1", "d": "c2", "e": "c3",
                 "f": "c3", "g": "c4", "h": "c4"}
  for s in map(_decode, _read_examples(out, "train")):
    for item, cat in zip(s["item_id"] + s["neg_hist_item_id"],
                         s["category_id"] + s["neg_hist_category_id"]):
      assert cats.index(category_of[items.ids[item - 2]]) == cat


def test_vocabulary_counts_and_round_trip_through_the_model_pipeline(prepared):
  out, metadata = prepared
  items = _vocab(out, "item_id")
  # a: u1, u2, u6; b: u1, u2 (its duplicate is rejected, so not counted)
  assert items.ids[:2] == ["a", "b"] and items.counts[:2] == [3, 2]
  spec, _ = load_feature_spec(out)
  assert spec.item_features[0].vocab_size == items.size
  np.testing.assert_array_equal(spec.item_features[0].frequencies[2:4], [3, 2])
  batches = list(make_dataset(out, "train", spec, batch_size=5))
  labels = np.concatenate([b["label"].numpy() for b in batches])
  assert len(labels) == metadata["counts"]["samples_train"]
  raw = [_decode(r) for r in _read_examples(out, "train")]
  first = batches[0]
  assert first["hist_item_id"].shape[1] == 2
  np.testing.assert_array_equal(first["hist_length"][:len(raw[:5])],
                                [len(r["hist_item_id"]) for r in raw[:5]])


def _sample_set(out):
  return sorted(_read_examples(out, "train")) + sorted(_read_examples(out, "test"))


def test_deterministic_across_runs_and_worker_counts(tmp_path):
  rng = np.random.default_rng(0)
  lines = ["user_id,item_id,category_id,timestamp"]
  for n in range(400):
    item = int(rng.integers(60))
    lines.append(f"u{rng.integers(30)},i{item},c{item % 7},{rng.integers(10**6)}")
  events = _write(tmp_path, "\n".join(lines) + "\n")
  outputs = []
  for run_id, beam_args in enumerate([
      [], [], ["--direct_num_workers=2", "--direct_running_mode=multi_threading"],
      ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]]):
    config = prepare.PrepareConfig(events=events, output=str(tmp_path / f"o{run_id}"),
                                   negative_power=0.75,
                                   samples=SampleOptions(max_history=5, seed=7))
    prepare.run(config, beam_args)
    with open(os.path.join(config.output, "item_table.tsv"), "rb") as f:
      outputs.append((_sample_set(config.output), f.read()))
  assert len(outputs[0][0]) > 100
  for other in outputs[1:]:
    assert other == outputs[0]


def test_reader_batches_change_no_byte_of_the_output(tmp_path, monkeypatch):
  """ReadEvents groups a range's events by user in batches; a user split over
  many batches (and past the per-user cap) gives the same files as one batch."""
  import shutil  # pylint: disable=g-import-not-at-top
  from output_files import files_under  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  lines = ["user_id,item_id,category_id,timestamp"]
  for _ in range(600):
    item = int(rng.integers(80))
    lines.append(f"u{rng.integers(12)},i{item},c{item % 5},{rng.integers(10**6)}")
  lines.append("u1,,c1,5")  # a dead letter among the batches
  config = prepare.PrepareConfig(
      events=_write(tmp_path, "\n".join(lines) + "\n"),
      output=str(tmp_path / "out"), max_events_per_user=40,
      samples=SampleOptions(max_history=6, seed=3))
  whole = prepare.run(config)
  expected = files_under(config.output)
  shutil.rmtree(config.output)
  monkeypatch.setattr(prepare, "READ_BATCH_EVENTS", 7)
  batched = prepare.run(config)
  assert files_under(config.output) == expected
  assert batched == whole
  counts = batched["counts"]
  assert counts["events_read"] == 601
  # 12 users capped at 40 of ~50 events each, plus the row without an item.
  assert counts["events_rejected"] > 12 * 5
  assert counts["events_read"] == counts["events_used"] + counts["events_rejected"]


def _reference_lines(data: bytes, skip_header: bool):
  """Lines as the job must see them: split on \\n, one trailing \\r removed,
  decoded, or the raw bytes of a line that is not UTF-8."""
  lines = data.split(b"\n")
  if data.endswith(b"\n"):
    lines.pop()
  out = []
  for raw in lines[1:] if skip_header else lines:
    raw = raw[:-1] if raw.endswith(b"\r") else raw
    try:
      out.append(raw.decode("utf-8"))
    except UnicodeDecodeError:
      out.append(raw)
  return out


@pytest.mark.parametrize("tail", [b"\n", b""])
def test_byte_ranges_read_every_line_once(tmp_path, monkeypatch, tail):
  data = (b"user_id,item_id,timestamp\r\nu1,a,1\n\nu2,\xc3\xa9t\xc3\xa9,2\r\n"
          b"u3,b\rc,3\nu4,\xff\xfe,4\n   \nu5,\xe2\x82\xac,5" + tail)
  path = tmp_path / "events.csv"
  path.write_bytes(data)
  expected = _reference_lines(data, skip_header=True)
  assert b"u4,\xff\xfe,4" in expected and "u3,b\rc,3" in expected
  for block in (1, 3, 7, 1 << 20):
    monkeypatch.setattr(prepare, "READ_BLOCK_BYTES", block)
    for size in (1, 2, 5, 13, len(data)):
      got = []
      for start in range(0, len(data), size):
        got += list(prepare._read_range(  # pylint: disable=protected-access
            str(path), start, min(len(data), start + size), "csv", True))
      assert got == expected, (block, size)


def test_a_line_that_is_not_utf8_is_dead_lettered(tmp_path):
  events = _write(tmp_path, "")
  with open(events, "wb") as f:
    f.write(b"user_id,item_id,category_id,timestamp\n"
            b"u1,a,c1,1\nu1,b,c1,2\nu1,\xff,c1,3\nu1,c,c2,4\nu2,d,c2,1\n")
  config = _config(tmp_path, events)
  counts = prepare.run(config)["counts"]
  assert counts["events_read"] == 5
  assert counts["events_rejected"] == 1
  assert counts["events_used"] == 4
  with open(glob.glob(os.path.join(config.output, "dead_letter", "*.jsonl"))[0]) as f:
    letters = [json.loads(line) for line in f]
  assert letters == [{"source": "events", "reason": "line is not valid UTF-8",
                      "row": "u1,\\xff,c1,3"}]


def test_a_header_that_is_not_utf8_is_one_clear_error(tmp_path):
  events = str(tmp_path / "events.csv")
  with open(events, "wb") as f:
    f.write(b"user_id,item\xff_id,timestamp\nu1,a,1\n")
  with pytest.raises(prepare.InputError,
                     match="events.csv: the header line is not valid UTF-8 "
                     r"\(invalid start byte at byte 12\); save the file as UTF-8$"):
    prepare.run(_config(tmp_path, events))
  assert not os.path.exists(tmp_path / "out")


def test_labeled_protocol_with_ratings_splits_users(tmp_path):
  lines = ["user_id\titem_id\trating\ttimestamp"]
  for u in range(40):
    for t in range(5):
      lines.append(f"{u}\t{(u + t) % 9}\t{5 if t % 2 == 0 else 2}\t{t}")
  events = _write(tmp_path, "\n".join(lines) + "\n", "ratings.tsv")
  config = prepare.PrepareConfig(
      events=events, output=str(tmp_path / "out"),
      columns=Columns(rating="rating", item_features=()),
      samples=SampleOptions(protocol="labeled", max_history=3, test_fraction=0.25))
  metadata = prepare.run(config)
  train = [_decode(r) for r in _read_examples(config.output, "train")]
  test = [_decode(r) for r in _read_examples(config.output, "test")]
  # Labels by t are 1,0,1,0,1. Events t=1..4 follow the first positive: 4
  # samples per user; histories (earlier positives) have 1,1,2,2 behaviours.
  assert len(train) + len(test) == 40 * 4
  assert {tuple(s["user_id"]) for s in train}.isdisjoint(
      {tuple(s["user_id"]) for s in test})
  assert 0 < len(test) < len(train)
  per_label = {(len(s["hist_item_id"]), s["label"][0]) for s in train}
  assert per_label == {(1, 0.0), (1, 1.0), (2, 0.0), (2, 1.0)}
  assert metadata["feature_spec"]["item_features"] == [
      {"name": "item_id", "vocab_size": 11, "embedding_dim": 18}]


def test_item_table_join_rejects_unknown_and_duplicate_items(tmp_path):
  events = _write(tmp_path, "user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu1,z,3\n"
                  "u1,c,4\nu2,d,1\n")
  items = _write(tmp_path, "item_id,category_id\na,x\nb,y\nc,x\nc,q\n,y\nd,y\n",
                 "items.csv")
  config = prepare.PrepareConfig(events=events, items=items,
                                 output=str(tmp_path / "out"))
  metadata = prepare.run(config)
  counts = metadata["counts"]
  assert (counts["events_read"], counts["events_used"],
          counts["events_rejected"]) == (5, 4, 1)
  assert (counts["items_read"], counts["items_rejected"]) == (6, 2)
  reasons = {r["reason"] for r in counts["rejected_by_reason"]}
  assert "field 'item_id': unknown item 'z' (not in the item table)" in reasons
  assert "duplicate item 'c' in the item table" in reasons
  assert "missing field 'item_id'" in reasons
  cats = _vocab(config.output, "category_id")
  # Of c's two rows the smallest (q) is kept: file order is not preserved by
  # distributed runners, so "first in the file" would not be deterministic.
  assert cats.ids == ["y", "q", "x"] and cats.counts == [2, 1, 1]
  # Serving's item table is the item file's (deduplicated) rows.
  with open(os.path.join(config.output, "item_table.tsv")) as f:
    assert f.read() == "item_id\tcategory_id\na\tx\nb\ty\nc\tq\nd\ty\n"


def test_user_whose_history_covers_the_catalogue_is_dead_lettered(tmp_path):
  events = _write(tmp_path, "user_id,item_id,category_id,timestamp\n"
                  "u1,a,x,1\nu1,b,x,2\nu1,c,x,3\n")
  metadata = prepare.run(_config(tmp_path, events))
  counts = metadata["counts"]
  assert (counts["events_used"], counts["events_rejected"]) == (0, 3)
  assert counts["rejected_by_reason"] == [{
      "source": "events", "count": 3,
      "reason": "user 'u1': every item of the vocabulary is in the user's history"}]


def test_validate_names_the_field_and_parses_formats():
  cols = Columns(label="clicked")
  event = validate({"user_id": 3, "item_id": 4.0, "timestamp": "2020-01-01T00:00:00",
                    "clicked": "1", "category_id": "k"}, cols)
  assert (event.user, event.item, event.label) == ("3", "4", 1)
  assert event.timestamp == 1577836800.0
  with pytest.raises(ValueError, match="field 'clicked': '2' is not a 0/1 label"):
    validate({"user_id": 1, "item_id": 1, "timestamp": 1, "clicked": 2,
              "category_id": "k"}, cols)
  with pytest.raises(ValueError, match="missing field 'category_id'"):
    validate({"user_id": 1, "item_id": 1, "timestamp": 1, "clicked": 1}, cols)


def test_counting_transform_with_test_pipeline():
  """`beam.testing` style check of the validation step on its own."""
  rows = [{"user_id": "u", "item_id": "i", "timestamp": "1", "category_id": "c"},
          {"user_id": "u", "item_id": "", "timestamp": "1", "category_id": "c"}]
  with TestPipeline() as p:
    out = (p | beam.Create(rows)
           | beam.ParDo(prepare.ValidateEvents(Columns())).with_outputs(
               "dead_letter", main="events"))
    assert_that(out.events | "Users" >> beam.Map(lambda e: e.user),
                equal_to(["u"]), label="events")
    assert_that(out["dead_letter"] | "Why" >> beam.Map(lambda d: d["reason"]),
                equal_to(["missing field 'item_id'"]), label="dead")


def test_bad_arguments_are_one_clear_sentence(tmp_path, capsys):
  code = prepare.main(["--events", str(tmp_path / "none.csv"),
                       "--output", str(tmp_path / "o")])
  assert code == 2
  assert "--events: no file matches" in capsys.readouterr().err


def test_refuses_to_mix_with_an_existing_output_unless_overwrite(tmp_path):
  events = _write(tmp_path, EVENTS)
  config = _config(tmp_path, events)
  first = prepare.run(config)
  with pytest.raises(ValueError, match="--overwrite"):
    prepare.run(config)
  config.overwrite = True
  again = prepare.run(config)
  assert again["counts"] == first["counts"]
  assert len(_read_examples(config.output, "train")) == first["counts"]["samples_train"]


def test_full_collections_are_rarer_inside_the_block_only():
  old = gc.get_threshold()
  with prepare.fewer_full_collections(every=777):
    assert gc.get_threshold() == (old[0], old[1], max(old[2], 777))
  assert gc.get_threshold() == old
  with pytest.raises(RuntimeError):
    with prepare.fewer_full_collections(every=777):
      raise RuntimeError("a failing pipeline")
  assert gc.get_threshold() == old


def test_the_pipeline_runs_with_rarer_full_collections(tmp_path, monkeypatch):
  seen = []
  process = prepare.WriteShard.process

  def spy(self, element):
    seen.append(gc.get_threshold()[2])
    yield from process(self, element)

  monkeypatch.setattr(prepare.WriteShard, "process", spy)
  old = gc.get_threshold()
  prepare.run(_config(tmp_path, _write(tmp_path, EVENTS)))
  assert seen and set(seen) == {max(old[2], prepare.FULL_COLLECTION_EVERY)}
  assert gc.get_threshold() == old


def test_a_shard_holds_its_users_in_hash_order_not_id_order(tmp_path):
  # 40 users u00..u39, 3 events each, one shard: the file holds each user's
  # samples together, users in the order of `write_order` (a hash of the id).
  lines = ["user_id,item_id,category_id,timestamp"]
  for u in range(40):
    lines += [f"u{u:02d},i{(u + k) % 7},c{k % 2},{k + 1}" for k in range(3)]
  config = dataclasses.replace(
      _config(tmp_path, _write(tmp_path, "\n".join(lines) + "\n")),
      num_shards=1)
  prepare.run(config)
  users = _vocab(config.output, "user_id")
  order = [users.ids[int(_decode(r)["user_id"][0]) - 2]
           for r in _read_examples(config.output, "train")]
  runs = [u for i, u in enumerate(order) if i == 0 or order[i - 1] != u]
  assert sorted(runs) == [f"u{u:02d}" for u in range(40)]  # each user once
  assert runs == sorted(runs, key=lambda u: prepare.write_order((u, 0, b"")))
  assert runs != sorted(runs)
