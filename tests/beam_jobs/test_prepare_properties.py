"""Properties of `prepare.run` on random small logs with random corruption
(Hypothesis): every non-blank line read is used or rejected, the output bytes
do not depend on the runner's threads or the input's split into ranges, and
a run either commits a whole data set or leaves no output at all."""

import os
import shutil
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from output_files import files_under
from beam_jobs import prepare
from beam_jobs.samples import SampleOptions

HEADER = b"user_id,item_id,category_id,timestamp"

# How each kind of line is written from (user, item, category, time), and
# whether it is a valid event. Blank lines are not rows at all.
LINES = {
    "plain": (lambda u, i, c, t: f"u{u},i{i},c{c},{t}".encode(), True),
    "quoted": (lambda u, i, c, t: f'"u{u}","i{i}","c{c}","{t}"'.encode(), True),
    "comma_in_quotes": (lambda u, i, c, t: f'u{u},i{i},"c,{c}",{t}'.encode(),
                        True),
    "padded": (lambda u, i, c, t: f" u{u} ,i{i} , c{c},{t} ".encode(), True),
    "iso_time": (lambda u, i, c, t: f"u{u},i{i},c{c},1970-01-01T00:00:{t:02d}Z"
                 .encode(), True),
    "unicode": (lambda u, i, c, t: f"u{u},\u00e9{i},c{c},{t}".encode(), True),
    "no_item": (lambda u, i, c, t: f"u{u},,c{c},{t}".encode(), False),
    "bad_time": (lambda u, i, c, t: f"u{u},i{i},c{c},t{t}".encode(), False),
    "extra_field": (lambda u, i, c, t: f"u{u},i{i},c{c},{t},x".encode(), False),
    "short": (lambda u, i, c, t: f"u{u},i{i}".encode(), False),
    "bad_bytes": (lambda u, i, c, t: f"u{u},i{i}".encode() + b"\xff\xfe" +
                  f",c{c},{t}".encode(), False),
    "blank": (lambda u, i, c, t: b" " * (t % 3), None),
}


@st.composite
def logs(draw):
  """(file bytes, non-blank lines, whether any line is a valid event)."""
  rows = draw(st.lists(st.tuples(
      st.sampled_from(sorted(LINES)), st.integers(0, 3), st.integers(0, 5),
      st.integers(0, 2), st.integers(0, 30)), max_size=14))
  lines = []
  for kind, u, i, c, t in rows:
    write, valid = LINES[kind]
    lines.append((write(u, i, c, t), valid))
  # Exact copies of some lines (duplicate events, or duplicate bad rows).
  copies = draw(st.lists(st.integers(0, max(len(lines) - 1, 0)), max_size=4))
  lines += [lines[k] for k in copies if lines]
  lines = draw(st.permutations(lines))
  endings = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]),
                          min_size=len(lines) + 1, max_size=len(lines) + 1))
  bom = draw(st.booleans())
  last_newline = draw(st.booleans())
  data = (b"\xef\xbb\xbf" if bom else b"") + HEADER + endings[-1]
  for k, (line, _) in enumerate(lines):
    ending = endings[k] if (k < len(lines) - 1 or last_newline) else b""
    data += line + ending
  rows = sum(valid is not None for _, valid in lines)
  return data, rows, any(valid for _, valid in lines)


# Runner settings compared: the default, and two threads with the input cut
# into ranges of a few bytes and the reader flushing every two events.
SPLIT = {"MIN_RANGE_BYTES": 1, "READ_BATCH_EVENTS": 2}


def _run(events: str, output: str, split: bool) -> dict:
  config = prepare.PrepareConfig(
      events=events, output=output, negative_power=0.5,
      samples=SampleOptions(max_history=3, num_negatives=2, seed=5))
  if not split:
    return prepare.run(config)
  saved = {name: getattr(prepare, name) for name in SPLIT}
  try:
    for name, value in SPLIT.items():
      setattr(prepare, name, value)
    return prepare.run(config, ["--direct_num_workers=2",
                                "--direct_running_mode=multi_threading"],
                       range_bytes=16)
  finally:
    for name, value in saved.items():
      setattr(prepare, name, value)


@settings(max_examples=8, deadline=None, database=None, derandomize=True)
@given(logs())
def test_counts_add_up_output_is_runner_independent_and_whole_or_absent(log):
  data, rows, any_valid = log
  with tempfile.TemporaryDirectory() as tmp:
    events = os.path.join(tmp, "events.csv")
    with open(events, "wb") as f:
      f.write(data)
    output = os.path.join(tmp, "out")
    if not any_valid:
      # Too few good rows is found before the pipeline: nothing is written.
      with pytest.raises(prepare.InputError,
                         match="no rows" if not rows else "none of the first"):
        _run(events, output, split=False)
      assert not os.path.exists(output)
      return
    metadata = _run(events, output, split=False)
    counts = metadata["counts"]
    assert counts["events_read"] == rows
    assert counts["events_read"] == (counts["events_used"]
                                     + counts["events_rejected"])
    first = files_under(output)
    assert {p.split("/")[0] for p in first} == set(prepare.OUTPUTS)
    shutil.rmtree(output)
    assert _run(events, output, split=True) == metadata
    assert files_under(output) == first
