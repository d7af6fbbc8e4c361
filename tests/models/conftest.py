import pytest

from tfrs_din.data.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="session")
def small_data():
  return generate(SyntheticConfig(num_users=120, max_history=12, seed=3))
