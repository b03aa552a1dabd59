"""The shipped default model: verifies, and scores clear sentences as a typical investor would,
through the worker's own runtime (both variants it ships)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.runtime import load_model, read_manifest, verify_directory

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"

CLEAR = [
    ("Net sales for the first half rose 14 % to EUR 86.2 million from EUR 75.6 million.", "positive"),
    ("The group swung to an operating loss of SEK 12 million after a profit of SEK 40 million a year ago.",
     "negative"),
    ("Norvik Logistics has about 2,300 staff in four countries and keeps its head office in Aarhus.", "neutral"),
    ("Kestrel Port Systems wins a EUR 4 million order to supply cranes for a container terminal.", "positive"),
    ("The board proposes to start negotiations that may lead to the loss of up to 140 jobs.", "negative"),
    ("Lender cuts full-year profit guidance as loan losses mount", "negative"),
    ("Analyst upgrades the miner to buy and raises its target to 54 from 41", "positive"),
    ("Tallow & Reed will hold its annual general meeting on 14 April in Leeds.", "neutral"),
    ("$TSLA loading up on more shares, this is going way higher 🚀", "positive"),
    ("sold everything, $XYZ is heading to zero, bag holders beware", "negative"),
]


def test_the_shipped_model_verifies_and_stays_within_the_release_budget():
    manifest = verify_directory(DEFAULT)  # sha256 of every file
    assert {"int8", "fp16"} <= set(manifest.variants) and manifest.default_variant == "int8"
    size = sum((DEFAULT / name).stat().st_size for name in manifest.files)
    assert size <= 50 * 1024 * 1024, size
    assert manifest.source["training"]["recipe"]["seed"] == 13
    assert manifest.variants["fp16"].borrows  # the word embeddings come from the int8 file


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_the_shipped_model_scores_clear_sentences_to_their_labels(variant):
    model = load_model(DEFAULT, variant=variant, providers=["CPUExecutionProvider"])
    assert model.variant == variant and read_manifest(DEFAULT).labels == list(model.labels)
    predictions = model.predict([text for text, _ in CLEAR])
    wrong = [(text, p.label) for (text, expected), p in zip(CLEAR, predictions) if p.label != expected]
    assert wrong == []
