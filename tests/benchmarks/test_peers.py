"""The schedules of benchmarks/peers.py: which rows each epoch reads, which
users validate, and which epoch's test scores are kept."""

import argparse
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "benchmarks"))
import peers  # noqa: E402  pylint: disable=g-import-not-at-top


def _train(users: int = 60, rows_per_user: int = 23, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  user_id = rng.permutation(np.repeat(np.arange(1, users + 1), rows_per_user))
  return {"user_id": user_id,
          "label": rng.integers(0, 2, len(user_id)).astype(np.float32)}


def test_validation_holds_out_whole_users_the_same_every_time():
  train = _train()
  held = peers.validation_rows(train)
  np.testing.assert_array_equal(held, peers.validation_rows(train))
  held_users = set(train["user_id"][held])
  assert len(held_users) == round(peers.VALIDATION_FRACTION * 60)
  assert not held_users & set(train["user_id"][~held])  # whole users


def test_one_epoch_reads_every_row_in_the_export_order():
  train, test = _train(), _train(users=10, seed=1)
  train_epoch, predict, state = _learner(train, test, [1.0])
  peers.run_schedule(train_epoch, predict, train, test,
                     argparse.Namespace(schedule="one_epoch", max_epochs=5))
  n = len(train["label"]) // peers.BATCH * peers.BATCH
  np.testing.assert_array_equal(state["rows"][0], np.arange(n))


def test_validated_epochs_read_the_same_rows_in_fixed_orders():
  train = _train(users=200)
  held = peers.validation_rows(train)
  kept = np.flatnonzero(~held)
  first = peers.epoch_rows(kept, 0)
  second = peers.epoch_rows(kept, 1)
  n = len(kept) // peers.BATCH * peers.BATCH
  np.testing.assert_array_equal(first, kept[:n])  # the export's order
  assert len(second) == n and not held[second].any()
  assert not np.array_equal(first, second)
  # The same permutation for every library and seed.
  np.testing.assert_array_equal(second, peers.epoch_rows(kept, 1))


def _learner(train, test, strengths):
  """A fake library whose validation AUC after epoch e rises with
  strengths[e], and whose test scores say which epoch produced them."""
  state = {"epoch": -1, "rows": []}
  rng = np.random.default_rng(1)

  def train_epoch(rows):
    state["epoch"] += 1
    state["rows"].append(rows)
    return len(rows)

  def predict(arrays):
    if arrays is test:
      return np.full(len(arrays["label"]), state["epoch"] / 10.0)
    noise = rng.uniform(size=len(arrays["label"]))
    return strengths[state["epoch"]] * arrays["label"] + noise

  return train_epoch, predict, state


def test_validated_keeps_the_best_validation_epoch_and_stops_after_patience():
  train, test = _train(users=300), _train(users=40, seed=1)
  strengths = [0.1, 0.8, 0.3, 0.2, 5.0]  # best at epoch 2 (1-based)
  train_epoch, predict, state = _learner(train, test, strengths)
  args = argparse.Namespace(schedule="validated", max_epochs=5)
  out = peers.run_schedule(train_epoch, predict, train, test, args)
  assert peers.PATIENCE == 2
  assert out["epochs"] == 2
  assert len(out["curve"]) == 4  # epochs 3 and 4 did not beat 2: stop
  np.testing.assert_array_equal(out["p"], np.full(len(test["label"]), 0.1))
  aucs = [c["val_auc"] for c in out["curve"]]
  assert aucs[1] == max(aucs)
  held = peers.validation_rows(train)
  assert out["validation_rows"] == int(held.sum())
  for rows in state["rows"]:
    assert not held[rows].any()


def test_one_epoch_schedule_trains_once_and_scores_the_test_split():
  train, test = _train(), _train(users=10, seed=1)
  train_epoch, predict, state = _learner(train, test, [1.0])
  out = peers.run_schedule(train_epoch, predict, train, test,
                           argparse.Namespace(schedule="one_epoch",
                                              max_epochs=5))
  assert len(state["rows"]) == 1 and "epochs" not in out
  np.testing.assert_array_equal(out["p"], np.zeros(len(test["label"])))


def test_a_loop_that_skips_examples_is_caught():
  train, test = _train(), _train(users=10, seed=1)
  _, predict, _ = _learner(train, test, [1.0])
  with pytest.raises(AssertionError):
    peers.run_schedule(lambda rows: len(rows) - 1, predict, train, test,
                       argparse.Namespace(schedule="one_epoch", max_epochs=1))


def test_the_export_carries_mba_counts_of_the_events(tmp_path):
  path = str(tmp_path / "data.npz")
  manifest = peers.export_data(path, quick=True)
  train, test, _, _ = peers._load(path)  # checks the hash and the shapes
  counts = {n: np.asarray(c) for n, c in manifest["frequencies"].items()}
  for name in ("user_id", "item_id", "category_id"):
    assert len(counts[name]) == manifest["vocab"][name]
    assert counts[name][:2].sum() == 0  # padding and OOV are no ids
  # Every event holds one user, one item and one category.
  events = counts["user_id"].sum()
  assert counts["item_id"].sum() == counts["category_id"].sum() == events
  # Each sample is an event of its user and its candidate; users' events
  # before their first click are not samples.
  assert events > len(train["label"]) + len(test["label"])
  for name in ("user_id", "item_id", "category_id"):
    seen = sum(np.bincount(split[name], minlength=len(counts[name]))
               for split in (train, test))
    assert (counts[name] >= seen).all()


def test_recbole_is_a_third_peer():
  assert peers.RUNNERS["recbole"] is peers.run_recbole
  assert peers.LIBRARIES == ("ours", "fuxictr", "deepctr_torch", "recbole")
  assert peers.NAMES["recbole"] == "RecBole"


def test_listed_names():
  assert peers.listed([]) == ""
  assert peers.listed(["A"]) == "A"
  assert peers.listed(["A", "B"]) == "A and B"
  assert peers.listed(["A", "B", "C"]) == "A, B and C"


def _run(library: str, model: str, auc: float) -> dict:
  return {"library": library, "model": model, "seed": 0, "auc": auc,
          "logloss": 0.6, "examples_per_s": 1000.0, "peak_rss_mb": 900.0,
          "params": 107010, "embedding_params": 23328,
          "params_by_part": {"attention": 45161}, "versions": {"recbole": "x"}}


def test_the_report_has_a_recbole_row_and_names_every_peer():
  manifest = {"generator": {"num_users": 250}, "mean_history": 16.5,
              "train_click_rate": 0.34, "n_train": 20224, "n_test": 1934,
              "sha256": "0" * 64}
  runs = [_run("fuxictr", "din", 0.61), _run("recbole", "din", 0.6021),
          _run("recbole", "dien", 0.5674)]
  text = peers.report(runs, manifest,
                      ["ours", "fuxictr", "deepctr_torch", "recbole"],
                      ["din", "dien"], [0], "runs.jsonl")
  assert text.startswith(
      "## Peers: FuxiCTR, DeepCTR-Torch and RecBole\n")
  assert "| RecBole | DIN | 0.6021 ± 0.0000 (n=1) |" in text
  assert "| RecBole | DIEN | 0.5674 ± 0.0000 (n=1) |" in text
  assert "| DeepCTR-Torch | DIN | failed |" in text  # no run: not invented
  assert "**RecBole 1.2.1**" in text
  only = peers.report(runs, manifest, ["ours", "recbole"], ["din"], [0],
                      "runs.jsonl")
  assert only.startswith("## Peers: RecBole\n")


def test_item_categories_is_the_exports_item_to_category_table():
  pairs = [(np.array([2, 3]), np.array([5, 6])),
           (np.array([[3, 4, 0], [2, 0, 0]]), np.array([[6, 5, 0], [5, 0, 0]]))]
  np.testing.assert_array_equal(peers.item_categories(6, pairs),
                                [0, 0, 5, 6, 5, 0])  # item 5: in no row


def test_item_categories_refuses_an_item_with_two_categories():
  pairs = [(np.array([2, 3]), np.array([5, 6])),
           (np.array([[3, 0]]), np.array([[7, 0]]))]
  with pytest.raises(ValueError, match=r"item id 3 has category ids \[6, 7\]"):
    peers.item_categories(6, pairs)
  with pytest.raises(ValueError, match="item id 3 is out of the item "
                     "vocabulary of 3"):
    peers.item_categories(3, pairs[:1])
  with pytest.raises(ValueError, match="item id -2 is out"):
    peers.item_categories(6, [(np.array([-2]), np.array([5]))])


def test_in_chunks_scores_every_row_once_in_order():
  seen = []

  def score(rows):
    seen.append(rows)
    return np.arange(5000)[rows] * 2.0

  got = peers._in_chunks(score, 5000)
  np.testing.assert_array_equal(got, np.arange(5000) * 2.0)
  assert [r.start for r in seen] == [0, 2048, 4096]


def test_tiled_rows_repeat_the_user_for_each_candidate():
  serve = {"user_id": np.array([7]), "hist_item_id": np.array([[3, 4, 0]]),
           "item_id": np.arange(peers.SERVE_CANDIDATES)[None] + 10,
           "category_id": np.ones((1, peers.SERVE_CANDIDATES), int)}
  tiled = peers._tiled_rows(serve)
  assert tiled["user_id"].shape == (peers.SERVE_CANDIDATES,)
  assert (tiled["user_id"] == 7).all()
  assert (tiled["hist_item_id"] == [3, 4, 0]).all()
  np.testing.assert_array_equal(tiled["item_id"],
                                np.arange(peers.SERVE_CANDIDATES) + 10)
