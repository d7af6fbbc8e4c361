"""Bad input gets one clear line and leaves the output location as it was:
empty files, byte-order marks, wrong columns, timestamps that never parse,
a run that keeps no event, and mistyped flags."""

import json
import os

import pytest

from output_files import files_under
from beam_jobs import preflight, prepare
from beam_jobs.events import Columns
from beam_jobs.samples import SampleOptions
from tfrs_din.data.pipeline import load_metadata

HEADER = "user_id,item_id,category_id,timestamp\n"
ROWS = "".join(f"u{u},i{(u * 3 + t) % 7},c{t % 2},{t}\n"
               for u in range(4) for t in range(4))


def _write(tmp_path, data, name="events.csv"):
  path = tmp_path / name
  path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
  return str(path)


def _config(tmp_path, events, **kwargs):
  return prepare.PrepareConfig(events=events, output=str(tmp_path / "out"),
                               samples=SampleOptions(max_history=3), **kwargs)


def _one_line(error) -> str:
  text = str(error.value)
  assert "\n" not in text
  return text


def _refused(tmp_path, data, name="events.csv", **kwargs):
  """The config of a run on events `data` (in file `name`) and the one line
  of the InputError that `prepare.run` refuses it with."""
  config = _config(tmp_path, _write(tmp_path, data, name), **kwargs)
  with pytest.raises(prepare.InputError) as error:
    prepare.run(config)
  return config, _one_line(error)


def _previous_output(tmp_path):
  """A committed data set in tmp_path/out and its files."""
  config = _config(tmp_path, _write(tmp_path, HEADER + ROWS, "good.csv"))
  prepare.run(config)
  return config.output, files_under(config.output)


# An empty file ---------------------------------------------------------------
def test_an_empty_csv_is_refused_before_anything_is_written(tmp_path):
  config, line = _refused(tmp_path, b"")
  assert line == (
      f"--events: {config.events} is empty (0 bytes); give a CSV file whose "
      "first line names the columns (user_id,item_id,timestamp,category_id) "
      "and then one event per line")
  assert issubclass(prepare.InputError, ValueError)  # the CLI's user errors
  assert not os.path.exists(config.output)


def test_an_empty_csv_leaves_a_previous_data_set_as_it_was(tmp_path):
  out, before = _previous_output(tmp_path)
  config = _config(tmp_path, _write(tmp_path, b""), overwrite=True)
  with pytest.raises(prepare.InputError, match="is empty"):
    prepare.run(config)
  assert files_under(out) == before
  load_metadata(out)


def test_a_run_that_makes_no_metadata_is_not_committed(tmp_path, monkeypatch):
  """Without the input check, an empty file of JSON lines gives a pipeline
  with no elements and so no metadata.json: the run fails instead of
  committing empty splits."""
  monkeypatch.setattr(preflight, "check_events", lambda *a, **k: None)
  config = _config(tmp_path, _write(tmp_path, b"", "events.jsonl"))
  with pytest.raises(prepare.PrepareFailed) as error:
    prepare.run(config)
  assert _one_line(error).endswith(
      f"the pipeline made no metadata.json: no row of {config.events} reached "
      "its last step")
  assert not os.path.exists(config.output)


def test_empty_files_among_others_add_nothing(tmp_path):
  (tmp_path / "in").mkdir()
  _write(tmp_path, b"", "in/a.csv")  # first in name order
  _write(tmp_path, HEADER + ROWS, "in/b.csv")
  counts = prepare.run(_config(tmp_path, str(tmp_path / "in" / "*.csv")))["counts"]
  assert (counts["events_read"], counts["events_rejected"]) == (16, 0)


# A byte-order mark -----------------------------------------------------------
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_csv_with_a_byte_order_mark_is_read(tmp_path, ending):
  text = (HEADER + ROWS).replace("\n", ending)
  config = _config(tmp_path, _write(tmp_path, b"\xef\xbb\xbf" + text.encode()))
  counts = prepare.run(config)["counts"]
  assert (counts["events_read"], counts["events_used"],
          counts["events_rejected"]) == (16, 16, 0)
  with open(os.path.join(config.output, "vocab", "user_id.tsv")) as f:
    assert "\ufeff" not in f.read()


def test_json_lines_and_an_item_table_with_byte_order_marks(tmp_path):
  lines = [json.dumps({"user_id": f"u{u}", "item_id": f"i{(u + t) % 5}",
                       "timestamp": t}) for u in range(3) for t in range(3)]
  events = _write(tmp_path, b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode(),
                  "events.jsonl")
  items = _write(tmp_path, "\ufeffitem_id,category_id\n" + "".join(
      f"i{i},c{i % 2}\n" for i in range(5)), "items.csv")
  config = _config(tmp_path, events, items=items)
  counts = prepare.run(config)["counts"]
  assert (counts["events_read"], counts["events_rejected"]) == (9, 0)
  assert (counts["items_read"], counts["items_rejected"]) == (5, 0)


# Columns and rows the flags do not match -------------------------------------
def test_a_header_without_rows_is_one_clear_line(tmp_path):
  config, line = _refused(tmp_path, HEADER)
  assert line == (f"--events: {config.events} has a header but no rows; give "
                  "at least one event, one per line")
  assert not os.path.exists(config.output)


def test_misnamed_columns_are_named_with_the_flags_that_select_them(tmp_path):
  config, line = _refused(tmp_path, "uid,iid,cat,ts\nu1,a,c,1\n")
  assert line == (
      f"--events: {config.events} has no column 'user_id' (--user_column), "
      "'item_id' (--item_column), 'timestamp' (--timestamp_column), "
      "'category_id' (--item_features); its columns are uid, iid, cat, ts; "
      "rename the columns or pass --user_column uid --item_column iid "
      "--timestamp_column ts --item_features cat")
  assert not os.path.exists(config.output)


def test_a_tab_separated_file_named_csv_gets_a_delimiter_hint(tmp_path):
  config = _config(tmp_path, _write(tmp_path, HEADER.replace(",", "\t") + "u\ti\tc\t1\n"))
  with pytest.raises(prepare.InputError, match=r"\(the header is one column "
                     r"holding tabs: the job splits CSV on commas and TSV "
                     r"\(--input_format tsv\) on tabs\)$"):
    prepare.run(config)


def test_a_missing_column_without_a_close_name_says_which_flag(tmp_path):
  config, line = _refused(tmp_path, "user_id,item_id,timestamp\nu,i,1\n")
  assert line == (
      f"--events: {config.events} has no column 'category_id' "
      "(--item_features); its columns are user_id, item_id, timestamp; rename "
      "the columns or name them with --item_features")


def test_timestamps_that_never_parse_are_one_clear_line(tmp_path):
  rows = "".join(f"u{u},i{u},c1,2024/05/0{u + 1}\n" for u in range(3))
  config, line = _refused(tmp_path, HEADER + "\n" + rows)
  # Line 2 is blank: the first row is line 3.
  assert line == (
      "--events: none of the first 3 rows is a valid event (1 x field "
      "'timestamp': cannot parse '2024/05/01' as seconds or ISO-8601; 1 x "
      "field 'timestamp': cannot parse '2024/05/02' as seconds or ISO-8601; "
      "1 x field 'timestamp': cannot parse '2024/05/03' as seconds or "
      f"ISO-8601); {config.events} line 3: field 'timestamp': cannot parse "
      "'2024/05/01' as seconds or ISO-8601: give seconds since the epoch or "
      "ISO-8601 times such as 2024-05-01T12:00:00Z (convert the column first)")
  assert not os.path.exists(config.output)


def test_some_bad_rows_are_dead_letters_not_an_error(tmp_path):
  config = _config(tmp_path, _write(tmp_path, HEADER + "u9,i1,c1,never\n" + ROWS))
  counts = prepare.run(config)["counts"]
  assert (counts["events_read"], counts["events_rejected"]) == (17, 1)


def test_only_the_first_rows_are_sampled(tmp_path, monkeypatch):
  monkeypatch.setattr(preflight, "SAMPLE_ROWS", 2)
  bad = "u9,i1,c1,never\n" * 2
  with pytest.raises(prepare.InputError, match="none of the first 2 rows"):
    prepare.run(_config(tmp_path, _write(tmp_path, HEADER + bad + ROWS)))
  monkeypatch.setattr(preflight, "SAMPLE_ROWS", 3)
  counts = prepare.run(_config(tmp_path, _write(tmp_path, HEADER + bad + ROWS))
                       )["counts"]
  assert (counts["events_read"], counts["events_rejected"]) == (18, 2)


def test_files_of_a_pattern_must_share_their_header(tmp_path):
  (tmp_path / "in").mkdir()
  _write(tmp_path, HEADER + ROWS, "in/a.csv")
  other = _write(tmp_path, "user_id,item_id,timestamp,category_id\nu,i,1,c\n",
                 "in/b.csv")
  with pytest.raises(prepare.InputError) as error:
    prepare.run(_config(tmp_path, str(tmp_path / "in" / "*.csv")))
  assert _one_line(error) == (
      f"{other}: its columns (user_id,item_id,timestamp,category_id) differ "
      f"from those of {tmp_path / 'in' / 'a.csv'} (user_id,item_id,category_id,"
      "timestamp); every file of a pattern must have the same header")


def test_json_lines_without_a_named_field(tmp_path):
  config, line = _refused(
      tmp_path, '{"user": "u", "item_id": "i", "timestamp": 1}\n',
      "events.jsonl", columns=Columns(item_features=()))
  assert line == (
      f"--events: the first 1 rows of {config.events} have no column 'user_id' "
      "(--user_column); its columns are item_id, timestamp, user; rename the "
      "columns or pass --user_column user")


def test_parquet_columns_and_rows_are_checked(tmp_path):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "events.parquet")
  pq.write_table(pa.table({"uid": ["u1"], "item_id": ["a"], "timestamp": [1]}),
                 path)
  config = _config(tmp_path, path, columns=Columns(item_features=()))
  with pytest.raises(prepare.InputError, match=r"^--events: .*events.parquet "
                     r"has no column 'user_id' \(--user_column\); its columns "
                     r"are uid, item_id, timestamp; rename the columns or pass "
                     r"--user_column uid$"):
    prepare.run(config)
  pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"],
                           "timestamp": ["May 1", "May 2"]}), path)
  with pytest.raises(prepare.InputError, match=r"events.parquet row 1: field "
                     r"'timestamp': cannot parse 'May 1' as seconds"):
    prepare.run(config)
  assert not os.path.exists(config.output)


def test_an_item_table_without_the_item_column(tmp_path):
  items = _write(tmp_path, "item,category_id\na,c\n", "items.csv")
  config = _config(tmp_path, _write(tmp_path, "user_id,item_id,timestamp\nu,a,1\n"),
                   items=items)
  with pytest.raises(prepare.InputError, match=r"^--items: .*items.csv has no "
                     r"column 'item_id' \(--item_column\); .* pass "
                     r"--item_column item$"):
    prepare.run(config)


# A run that keeps no event ----------------------------------------------------
def _no_event_kept(tmp_path):
  """Valid rows whose items are all missing from the item table: found only
  when the pipeline joins them."""
  items = _write(tmp_path, "item_id,category_id\na,c1\nb,c2\n", "items.csv")
  events = _write(tmp_path, "user_id,item_id,timestamp\nu1,x,1\nu1,y,2\nu2,x,3\n")
  return _config(tmp_path, events, items=items, overwrite=True)


def test_a_run_that_keeps_no_event_names_the_counts_not_deleted_files(tmp_path):
  config = _no_event_kept(tmp_path)
  with pytest.raises(prepare.PrepareFailed) as error:
    prepare.run(config)
  assert isinstance(error.value, ValueError)
  assert _one_line(error) == (
      f"prepare failed, {config.output!r} was left as it was (its partial "
      f"files were removed): no event of {config.events} was kept: 3 read, 3 "
      "rejected (2 x field 'item_id': unknown item 'x' (not in the item "
      "table); 1 x field 'item_id': unknown item 'y' (not in the item table)); "
      "fix the input and run again")
  assert "_temporary" not in str(error.value)
  assert not os.path.exists(config.output)


def test_a_run_that_keeps_no_event_leaves_a_previous_data_set(tmp_path):
  out, before = _previous_output(tmp_path)
  with pytest.raises(prepare.PrepareFailed, match="no event of"):
    prepare.run(_no_event_kept(tmp_path))
  assert files_under(out) == before
  assert not os.path.exists(os.path.join(out, prepare.TEMPORARY_DIR))
  load_metadata(out)


def test_the_job_command_prints_one_line_and_exits_2_or_1(tmp_path, capsys):
  config = _config(tmp_path, _write(tmp_path, "uid,iid,cat,ts\nu1,a,c,1\n"))
  assert prepare.main(["--events", config.events, "--output", config.output]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: --events: ") and err.count("\n") == 1
  bad = _no_event_kept(tmp_path)
  assert prepare.main(["--events", bad.events, "--items", bad.items,
                       "--item_features", "category_id",
                       "--output", bad.output]) == 1
  err = capsys.readouterr().err  # after the job's log line of its start
  assert "Traceback" not in err
  assert err.splitlines()[-1].startswith("error: prepare failed")
  assert "no event of" in err.splitlines()[-1]


# Flags -------------------------------------------------------------------------
BASE = ["--events", "e.csv", "--output", "o"]


def test_a_mistyped_flag_is_refused_with_the_closest_one():
  with pytest.raises(ValueError) as error:
    prepare.parse_args(BASE + ["--max_histroy", "5"])
  assert _one_line(error) == "unknown flag --max_histroy; did you mean --max_history?"
  with pytest.raises(ValueError, match="^unknown flag --direct_num_worker; did "
                     "you mean --direct_num_workers\\?$"):
    prepare.parse_args(BASE + ["--direct_num_worker=2"])
  with pytest.raises(ValueError, match="^unknown flag --zzz: neither an option"):
    prepare.parse_args(BASE + ["--zzz"])


def test_abbreviations_and_stray_values_are_refused():
  with pytest.raises(ValueError, match="^unknown flag --max_hist; did you mean "
                     "--max_history\\?$"):
    prepare.parse_args(BASE + ["--max_hist", "5"])
  with pytest.raises(ValueError, match="^unexpected argument '7'"):
    prepare.parse_args(BASE + ["--max_history", "5", "7"])
  with pytest.raises(ValueError, match="^argument --max_history: invalid int "
                     "value: 'five'$"):
    prepare.parse_args(BASE + ["--max_history", "five"])


def test_only_beam_pipeline_options_pass_through_to_beam():
  args, beam_args = prepare.parse_args(BASE + [
      "--runner=DaskRunner", "--dask_client_address", "tcp://h:8786",
      "--max_history", "5", "--direct_num_workers", "2",
      "--direct_running_mode=multi_threading", "--label", "team=x",
      "--negative_power", "-0.5"])
  assert beam_args == ["--runner=DaskRunner", "--dask_client_address",
                       "tcp://h:8786", "--direct_num_workers", "2",
                       "--direct_running_mode=multi_threading", "--label",
                       "team=x"]
  # Beam's --label is not an abbreviation of the job's --label_column.
  assert (args.max_history, args.label_column, args.negative_power) == (5, None, -0.5)


def test_other_flags_of_the_caller_are_suggested():
  with pytest.raises(ValueError, match="did you mean --learning_rate\\?$"):
    prepare.split_beam_args(["--learning_rat", "0.1"],
                            other_flags=["--learning_rate", "--epochs"])
  # Not Beam's --expansion_port: difflib rates that pair above its own default
  # cutoff one way round and far below it the other; the lower rating counts.
  with pytest.raises(ValueError, match="^unknown flag --learning_rat: neither "
                     "an option of the job"):
    prepare.split_beam_args(["--learning_rat", "0.1"])
  assert prepare.split_beam_args(["--runner", "DirectRunner"]) == (
      [], ["--runner", "DirectRunner"])


def test_workflow_prepare_refuses_a_mistyped_flag_before_running(tmp_path):
  from tfrs_din.training import workflow  # pylint: disable=g-import-not-at-top
  events = _write(tmp_path, HEADER + ROWS)
  with pytest.raises(ValueError, match="^unknown flag --max_histroy; did you "
                     "mean --max_history\\?$"):
    workflow.prepare(["--events", events, "--output", str(tmp_path / "out"),
                      "--max_histroy", "5"])
  assert not os.path.exists(tmp_path / "out")
