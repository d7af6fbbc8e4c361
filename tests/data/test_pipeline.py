"""Reading a prepared directory refuses data of another schema version."""

import json

import pytest

from tfrs_din import schema
from tfrs_din.data.pipeline import load_feature_spec, load_metadata


def _write_metadata(directory, version):
  metadata = {"version": version, "feature_spec": {
      "user_features": [], "item_features": [
          {"name": "item_id", "vocab_size": 3, "embedding_dim": 4}],
      "max_history": 5}}
  (directory / "vocab").mkdir()
  (directory / "vocab" / "item_id.tsv").write_text(
      "index\tid\tcount\n0\t<pad>\t0\n1\t<oov>\t0\n2\tx\t4\n")
  (directory / schema.METADATA_FILE).write_text(json.dumps(metadata))


def test_current_version_loads(tmp_path):
  _write_metadata(tmp_path, schema.SCHEMA_VERSION)
  spec, metadata = load_feature_spec(str(tmp_path))
  assert metadata["version"] == schema.SCHEMA_VERSION
  assert spec.item_features[0].frequencies.tolist() == [0, 0, 4]


def test_other_version_is_refused_naming_both_versions(tmp_path):
  _write_metadata(tmp_path, schema.SCHEMA_VERSION + 1)
  message = (f"has data schema version {schema.SCHEMA_VERSION + 1}, but this "
             f"tfrs_din reads version {schema.SCHEMA_VERSION}")
  with pytest.raises(ValueError, match=message):
    load_metadata(str(tmp_path))
  with pytest.raises(ValueError, match=message):
    load_feature_spec(str(tmp_path))
