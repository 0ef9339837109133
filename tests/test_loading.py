"""Streaming data: images decoded when a batch needs them, and a feature cache written as it goes.

The fast path (decoded images kept in memory) and the streamed path must train the same model; a
feature pass cancelled halfway must leave nothing that looks like a complete cache, and the next
pass over the same images must pick up where it stopped and give the same features.
(Memory and speed at scale are measured in benchmarks/large_data.py.)
"""

from __future__ import annotations

import pytest

import transfer.features as features
import transfer.loading as loading
from transfer import Cancelled
from transfer.fit import fit

TINY_FIT = dict(strategy="from-scratch", image_size=32, epochs=1, batch_size=16, workers=0, seed=3)


def test_streamed_and_in_memory_training_give_the_same_model(digits_small, tmp_path, monkeypatch):
    in_memory = fit(digits_small, zoo=tmp_path / "a", name="kept", **TINY_FIT)
    monkeypatch.setattr(loading, "MEMORY_BUDGET_MB", 0)  # nothing fits: every epoch reads the files
    streamed = fit(digits_small, zoo=tmp_path / "b", name="streamed", **TINY_FIT)
    assert in_memory.details["images_in_memory"] and not streamed.details["images_in_memory"]

    def scores(result):
        return [(row["epoch"], row["val_loss"], row["val_accuracy"]) for row in result.history]

    assert scores(streamed) == scores(in_memory) and streamed.metrics == in_memory.metrics


def test_a_cancelled_feature_pass_keeps_finished_chunks_and_the_next_pass_resumes(digits_small, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(features, "FEATURE_CHUNK", 64)
    decoded = []
    original_open = loading.open_image
    monkeypatch.setattr(loading, "open_image", lambda *args, **kwargs: decoded.append(1) or original_open(*args, **kwargs))
    settings = dict(strategy="feature-extractor", image_size=32, workers=0)
    zoo = tmp_path / "zoo"
    seen = []

    def stop_after_150_images():
        return bool(seen) and seen[-1] >= 150

    with pytest.raises(Cancelled):
        fit(digits_small, zoo=zoo, name="cancelled", should_stop=stop_after_150_images,
            progress=lambda event: seen.append(event.done) if event.stage == "features" else None, **settings)
    cache = zoo / "cache" / "features"
    assert not list(cache.glob("*.safetensors"))  # no complete feature set
    [partial] = cache.glob(".partial-*")
    assert sorted(path.name for path in partial.iterdir()) == ["part-00000.safetensors", "part-00001.safetensors"]
    assert not (zoo / "cancelled").exists()

    decoded.clear()
    resumed = fit(digits_small, zoo=zoo, name="resumed", **settings)
    assert len(decoded) == 400 - 2 * 64  # the two finished chunks were not computed again
    assert len(list(cache.glob("*.safetensors"))) == 1 and not list(cache.glob(".partial-*"))
    fresh = fit(digits_small, zoo=tmp_path / "fresh", name="fresh", **settings)
    assert resumed.metrics == fresh.metrics and resumed.history == fresh.history
