"""The data contract: one definition that beam_jobs and tfrs_din share."""

import pytest

from beam_jobs import prepare, samples, vocabulary
from tfrs_din import features, schema


def test_writers_and_readers_use_the_same_constants():
  assert prepare.METADATA_VERSION == schema.SCHEMA_VERSION
  assert vocabulary.PADDING_INDEX == features.PADDING_INDEX == 0
  assert vocabulary.OOV_INDEX == features.OOV_INDEX == 1
  assert features.HISTORY_PREFIX == schema.HISTORY_PREFIX == "hist_"
  assert features.NEGATIVE_PREFIX == schema.NEGATIVE_PREFIX == "neg_hist_"
  assert features.HISTORY_LENGTH == schema.HISTORY_LENGTH == "hist_length"
  assert samples.history_name is schema.history_name


def test_vocabulary_file_follows_the_documented_format():
  vocab = vocabulary.Vocabulary.from_counts("item_id", [("b", 1), ("a", 3),
                                                        ("c", 1)], min_count=2)
  assert vocab.to_tsv().splitlines() == [
      "index\tid\tcount", "0\t<pad>\t0", "1\t<oov>\t2", "2\ta\t3"]
  assert vocab.index("a") == schema.FIRST_INDEX
  assert vocab.index("zzz") == schema.OOV_INDEX
  assert schema.vocabulary_path("gs://b/data/", "item_id") == (
      "gs://b/data/vocab/item_id.tsv")


def test_check_version_names_both_versions():
  schema.check_version({"version": schema.SCHEMA_VERSION})
  with pytest.raises(ValueError, match=(
      r"x/metadata.json has data schema version 7, but this tfrs_din reads "
      rf"version {schema.SCHEMA_VERSION}")):
    schema.check_version({"version": 7}, "x/metadata.json")
  with pytest.raises(ValueError, match="schema version None"):
    schema.check_version({})
