"""The data options of `TrainConfig` (issue 13) and their `tfrs-din` flags:
the measured defaults, each value passed through, bad values refused
with the field's name."""

import re

import pytest

from tfrs_din import cli, training


def _train_args(*flags):
  return cli.build_parser().parse_args(
      ["train", "--data", "d", "--model_dir", "m", *flags])


def test_defaults_draw_fresh_negatives_and_keep_the_event_counts():
  config = cli._train_config(_train_args(), "dien")  # pylint: disable=protected-access
  assert (config.aux_negatives, config.aux_negative_power,
          config.mba_counts) == ("fresh", 1.0, "events")
  assert config == training.TrainConfig(model="dien")


def test_flags_set_the_fields():
  config = cli._train_config(_train_args(  # pylint: disable=protected-access
      "--aux_negatives", "fresh", "--aux_negative_power", "0.75",
      "--mba_counts", "samples", "--shuffle_buffer", "5000",
      "--regularization", "mba"), "dien")
  assert (config.aux_negatives, config.aux_negative_power,
          config.mba_counts, config.shuffle_buffer) == ("fresh", 0.75,
                                                        "samples", 5000)


@pytest.mark.parametrize("flag, value", [("--aux_negatives", "online"),
                                         ("--mba_counts", "rows")])
def test_flags_refuse_other_values(flag, value, capsys):
  with pytest.raises(SystemExit):
    _train_args(flag, value)
  assert flag in capsys.readouterr().err


@pytest.mark.parametrize("field, value, message", [
    ("aux_negatives", "online", "aux_negatives (--aux_negatives) must be one"),
    ("aux_negative_power", -0.5, "aux_negative_power (--aux_negative_power)"),
    ("aux_negative_power", float("inf"), "must be a finite number >= 0"),
    ("mba_counts", "rows", "mba_counts (--mba_counts) must be one of"),
    ("mba_counts", "samples", "only --regularization mba uses; got "
     "regularization='auto'"),
    ("shuffle_buffer", 0, "shuffle_buffer (--shuffle_buffer) must be an "),
    ("shuffle_buffer", 1e6, "integer >= 1, got 1000000.0"),
])
def test_bad_values_name_the_field(field, value, message, tmp_path):
  config = training.TrainConfig(**{field: value})
  with pytest.raises(ValueError, match=re.escape(message)):
    training.check_data_options(config)
  # `train` checks them before reading any data.
  with pytest.raises(ValueError, match=re.escape(message)):
    training.train("/nonexistent", str(tmp_path), config)
