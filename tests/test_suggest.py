"""The one "did you mean" of mistyped flags, config keys and model options
(`tfrs_din._suggest`): a close typo gets the right name, a far one none."""

import difflib

import pytest

from tfrs_din._suggest import CUTOFF, closest, did_you_mean

FLAGS = ["--max_history", "--min_count", "--learning_rate", "--epochs",
         "--timestamp_column", "--item_column"]


@pytest.mark.parametrize("typed, meant", [
    ("--max_histroy", "--max_history"),  # letters swapped
    ("--max_hist", "--max_history"),  # cut short
    ("--epoch", "--epochs"),  # one letter missing
    ("--learning-rate", "--learning_rate"),  # a dash for the underscore
    ("-min_count", "--min_count"),  # leading dashes aside
    ("--min_cuont", "--min_count")])
def test_a_close_typo_gets_the_name_meant(typed, meant):
  assert closest(typed, FLAGS) == meant
  assert did_you_mean(typed, FLAGS) == f"; did you mean {meant}?"


@pytest.mark.parametrize("typed", ["--zzz", "--seed", "--rate", "--item"])
def test_a_far_name_gets_nothing(typed):
  assert closest(typed, FLAGS) is None
  assert did_you_mean(typed, FLAGS) == ""
  assert closest(typed, []) is None


def test_the_lower_of_the_two_orders_counts():
  # difflib rates this pair above the cutoff one way round only; a short
  # flag is not offered for a long one by that chance.
  one, other = (difflib.SequenceMatcher(None, a, b).ratio()
                for a, b in [("item_column", "timestamp_column"),
                             ("timestamp_column", "item_column")])
  assert one >= CUTOFF > other
  assert closest("--item_column", ["--timestamp_column"]) is None
  assert closest("--timestamp_column", ["--item_column"]) is None
  assert closest("--item_colum", ["--timestamp_column", "--item_column"]) == (
      "--item_column")


def test_keys_and_options_are_quoted_and_flags_are_not():
  keys = ["epochs", "learning_rate", "gru_units"]
  assert did_you_mean("epoch", keys) == "; did you mean 'epochs'?"
  assert did_you_mean("gru_unit", keys) == "; did you mean 'gru_units'?"
  assert did_you_mean("--epoch", ["--epochs"]) == "; did you mean --epochs?"


def test_equally_close_names_give_the_first_in_sorted_order():
  # "abcd" is one letter from each, equally alike both ways round.
  assert closest("abcd", ["abcf", "abce"]) == "abce"
  assert closest("abcd", ["abce", "abcf"]) == "abce"
