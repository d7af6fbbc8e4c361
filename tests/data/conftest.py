"""Set-up shared by the data tests: a module's synthetic log and its records.

A module sets `SYNTHETIC` (a `SyntheticConfig`) and asks for `data` and
`directory`; a module may still define either fixture itself.
"""

import pytest

from tfrs_din.data.synthetic import generate


@pytest.fixture(scope="module")
def data(request):
  """The requesting module's `SYNTHETIC` log, generated."""
  return generate(request.module.SYNTHETIC)


@pytest.fixture(scope="module")
def directory(data, request, tmp_path_factory):
  """`data`'s records in 3 shards, and nothing else (no metadata.json): the
  in-memory path counts the records itself."""
  path = str(tmp_path_factory.mktemp(request.module.__name__.split(".")[-1]))
  data.write_records(path, shards=3)
  return path
