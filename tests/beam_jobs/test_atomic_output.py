"""The job's output appears whole or not at all: `_SUCCESS` is written last,
readers refuse a directory without it, and a failed run leaves the output
directory as it was. Also: the progress lines."""

import logging
import os

import pytest

from output_files import files_under
from beam_jobs import prepare
from beam_jobs.samples import SampleOptions
from tfrs_din import schema
from tfrs_din.data.pipeline import load_metadata

EVENTS = "".join(["user_id,item_id,category_id,timestamp\n"] + [
    f"u{u},i{(u * 7 + t) % 23},c{(u + t) % 4},{t}\n"
    for u in range(30) for t in range(6)] + ["u1,,c1,3\n"])



def _config(tmp_path, **kwargs):
  events = tmp_path / "events.csv"
  events.write_text(EVENTS)
  return prepare.PrepareConfig(events=str(events), output=str(tmp_path / "out"),
                               samples=SampleOptions(max_history=3), **kwargs)


def test_success_marker_is_written_last_and_nothing_temporary_is_left(tmp_path):
  config = _config(tmp_path)
  metadata = prepare.run(config)
  files = files_under(config.output)
  assert files[schema.SUCCESS_FILE] == b""
  assert not any(p.startswith(prepare.TEMPORARY_DIR) for p in files)
  assert sorted(files) == sorted([
      "_SUCCESS", "metadata.json", "item_table.tsv",
      "dead_letter/part-00000-of-00001.jsonl",
      "train/part-00000-of-00001.tfrecord.gz",
      "test/part-00000-of-00001.tfrecord.gz",
      "vocab/user_id.tsv", "vocab/item_id.tsv", "vocab/category_id.tsv"])
  assert load_metadata(config.output)["counts"] == metadata["counts"]
  counts = metadata["counts"]
  assert (counts["events_read"], counts["events_used"],
          counts["events_rejected"]) == (181, 180, 1)


def test_load_metadata_refuses_a_directory_without_the_marker(tmp_path):
  config = _config(tmp_path)
  prepare.run(config)
  os.remove(os.path.join(config.output, schema.SUCCESS_FILE))
  with pytest.raises(ValueError, match=r"has no _SUCCESS marker: `tfrs-din "
                     r"prepare` did not finish"):
    load_metadata(config.output)


class _Boom(Exception):
  pass


def _failing_writer(monkeypatch):
  def process(self, element):
    raise _Boom("disk full (simulated)")
  monkeypatch.setattr(prepare.WriteShard, "process", process)


def test_a_failed_run_leaves_the_previous_output_as_it_was(tmp_path, monkeypatch):
  config = _config(tmp_path)
  prepare.run(config)
  before = files_under(config.output)
  config.overwrite = True
  config.samples = SampleOptions(max_history=5)
  _failing_writer(monkeypatch)
  with pytest.raises(prepare.PrepareFailed, match=r"left as it was .*"
                     r"disk full \(simulated\)"):
    prepare.run(config)
  assert files_under(config.output) == before  # no temporary files either
  load_metadata(config.output)


def test_a_failed_first_run_leaves_nothing_readable(tmp_path, monkeypatch):
  config = _config(tmp_path)
  _failing_writer(monkeypatch)
  with pytest.raises(prepare.PrepareFailed):
    prepare.run(config)
  assert not os.path.exists(config.output)  # not even an empty _temporary/
  with pytest.raises(FileNotFoundError, match="metadata.json does not exist"):
    load_metadata(config.output)


def test_progress_lines_are_logged_while_it_runs(tmp_path, caplog):
  config = _config(tmp_path)
  with caplog.at_level(logging.INFO, logger="beam_jobs.prepare"):
    prepare.run(config, progress_seconds=0.0)
  lines = [r.getMessage() for r in caplog.records
           if "prepare progress" in r.getMessage()]
  # One line per 4096 events read (here once, at the end of the range) and per
  # user done: the totals grow line by line.
  assert len(lines) >= 30
  assert "events read 181, users done 30, samples written" in lines[-1]


def test_check_accounting_names_what_does_not_add_up():
  good = {"events_read": 10, "events_used": 7, "events_rejected": 3,
          prepare.SAMPLES_BUILT: 12, "samples_train": 9, "samples_test": 3}
  prepare.check_accounting(good)
  with pytest.raises(ValueError, match=r"events_read 10 != events_used 6 \+ "
                     r"events_rejected 3: the runner lost or repeated \+1 events"):
    prepare.check_accounting(dict(good, events_used=6))
  with pytest.raises(ValueError, match=r"samples made 12 != samples_train \+ "
                     r"samples_test 13: .* repeated -1 samples"):
    prepare.check_accounting(dict(good, samples_train=10))


def _losing_user_u3(monkeypatch, dofn):
  """A runner that silently loses user u3 in the input of `dofn`: its element
  in the group-by-user (CleanUser), its frames in a shard (WriteShard)."""
  process = dofn.process

  def lossy(self, element, *args):
    key, values = element
    if dofn is prepare.WriteShard:
      element = (key, [user for user in values if user[0] != "u3"])
    elif key == "u3":
      return
    yield from process(self, element, *args)
  monkeypatch.setattr(dofn, "process", lossy)


@pytest.mark.parametrize("dofn, error", [
    (prepare.CleanUser, r"events_read 181 != events_used 174 \+ "
     r"events_rejected 1: the runner lost or repeated \+6 events"),
    (prepare.WriteShard, r"samples made \d+ != samples_train \+ samples_test "
     r"\d+: the runner lost or repeated \+\d+ samples")])
def test_a_runner_that_loses_data_fails_the_run(tmp_path, monkeypatch, dofn,
                                                error):
  config = _config(tmp_path)
  _losing_user_u3(monkeypatch, dofn)
  with pytest.raises(prepare.PrepareFailed, match=error):
    prepare.run(config)
  assert not os.path.exists(config.output)
