"""A small synthetic log prepared by the Beam job, for tests that need a
prepared data directory."""

from tfrs_din.data.synthetic import SyntheticConfig
from tfrs_din.demo import write_events
from tfrs_din.training.workflow import prepare


def prepared_log(root, config: SyntheticConfig, *prepare_args: str) -> str:
  """Writes `config`'s log under `root`, prepares it; returns the data dir.

  Args:
    root: a temporary directory (pathlib.Path).
    config: the synthetic log.
    *prepare_args: more `tfrs-din prepare` flags.
  """
  events = str(root / "events.csv")
  write_events(events, config)
  out = str(root / "data")
  prepare(["--events", events, "--output", out, *prepare_args])
  return out
