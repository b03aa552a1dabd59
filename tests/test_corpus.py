"""The financial corpus: loader validation, frozen disjoint splits, near-duplicates."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from models.corpus import (AGREEMENTS, CORPUS_FILE, DOMAINS, LABELS, STYLES, CorpusError, agreement_report,
                           load_corpus, load_ood, load_split, near_duplicate_pairs, shingles)


def test_loader_rejects_malformed_rows_with_line_numbers(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"id": "a", "text": "Acme beats estimates", "label": "positive", "domain": "earnings", "style": "headline"}
    rows = [
        good,
        {**good, "id": "b", "label": "bullish"},
        {**good, "id": "c", "text": "   "},
        "not an object",
        {**good, "id": "a"},
        {**good, "id": "d", "domain": "sports"},
        {**good, "id": "e", "style": "tweet"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n")
    with pytest.raises(CorpusError) as info:
        load_corpus(path)
    message = str(info.value)
    assert "7 malformed row(s)" in message
    for fragment in ("bad.jsonl:2: label 'bullish' is not one of negative, neutral, positive",
                     "bad.jsonl:3: missing or empty text", "bad.jsonl:4: expected an object",
                     "bad.jsonl:5: duplicate id 'a' (first on line 1)", "bad.jsonl:6: domain 'sports'",
                     "bad.jsonl:7: style 'tweet'", "bad.jsonl:8: malformed JSON"):
        assert fragment in message


def test_csv_corpus_and_label_mapping(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text,label,domain,style\n1,Shares slump,neg,markets,headline\n")
    (row,) = load_corpus(path, label_map={"neg": "negative"})
    assert row.label == "negative"


def test_corpus_size_balance_and_coverage():
    rows = load_corpus(CORPUS_FILE)
    assert len(rows) >= 20_000
    labels = Counter(r.label for r in rows)
    assert all(labels[label] / len(rows) > 0.25 for label in LABELS)
    assert {r.domain for r in rows} == set(DOMAINS) and {r.style for r in rows} == set(STYLES)
    styles = Counter(r.style for r in rows)
    assert styles["press"] >= 6000 and styles["social"] + styles["forum"] >= 6000 and styles["headline"] >= 4000


def test_every_row_carries_two_blind_passes_and_an_agreement_that_follows_from_them():
    rows = load_corpus(CORPUS_FILE)  # the loader refuses a row whose label/agreement contradict its passes
    assert all(r.label_a in LABELS and r.label_b in LABELS and r.agreement in AGREEMENTS for r in rows)
    for r in rows:
        if r.agreement == "all":
            assert r.label_a == r.label_b == r.label and r.label_c is None
        else:
            assert r.label_a != r.label_b and r.label_c == r.label
            assert (r.label in (r.label_a, r.label_b)) == (r.agreement == "majority")
    report = agreement_report(rows)
    assert report["overall"]["n"] == len(rows) and -1 <= report["overall"]["cohen_kappa"] <= 1
    assert set(report["style"]) == set(STYLES)


def test_the_loader_refuses_labels_that_do_not_follow_from_the_passes(tmp_path):
    base = {"id": "a", "text": "Acme beats estimates", "domain": "earnings", "style": "headline"}
    rows = [
        {**base, "label": "positive", "label_a": "positive", "label_b": "neutral", "label_c": None,
         "agreement": "all"},  # disagreement without adjudication
        {**base, "id": "b", "label": "neutral", "label_a": "positive", "label_b": "positive", "label_c": None,
         "agreement": "all"},  # final label is not the passes' label
        {**base, "id": "c", "label": "positive", "label_a": "positive", "label_b": "neutral", "label_c": "positive",
         "agreement": "all"},  # adjudicated row marked "all"
        {**base, "id": "d", "label": "negative", "label_a": "positive", "label_b": "neutral", "label_c": "negative",
         "agreement": "none"},  # fine: all three differ
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(CorpusError) as info:
        load_corpus(path)
    message = str(info.value)
    assert "3 malformed row(s)" in message
    assert "c.jsonl:1: label_a and label_b differ and there is no adjudication" in message
    assert "c.jsonl:2: label 'neutral' does not follow" in message
    assert "c.jsonl:3: label_c given although the two passes agree" not in message  # it is a disagreement
    assert "c.jsonl:3: agreement 'all' but the passes" in message


def test_the_out_of_distribution_set_is_labelled_and_shares_no_sentence_with_the_corpus():
    ood = load_ood()
    assert len(ood) >= 1500 and {r.style for r in ood} == set(STYLES)
    corpus = [r.text for r in load_corpus(CORPUS_FILE)]
    texts = corpus + [r.text for r in ood]
    crossing = [p for p in near_duplicate_pairs(texts) if (p[0] < len(corpus)) != (p[1] < len(corpus))]
    assert crossing == []


def test_frozen_splits_are_disjoint_stratified_and_unchanged():
    splits = {name: load_split(name) for name in ("train", "validation", "test")}  # sha256-checked
    assert len(splits["test"]) >= 2000
    texts = {name: [r.text.lower() for r in rows] for name, rows in splits.items()}
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["train"]) & set(texts["validation"])
    assert not set(texts["validation"]) & set(texts["test"])
    # no near-identical text across splits (names and numbers masked)
    combined = [(name, t) for name, ts in texts.items() for t in ts]
    pairs = near_duplicate_pairs([t for _, t in combined])
    crossing = [(combined[i], combined[j]) for i, j, _ in pairs if combined[i][0] != combined[j][0]]
    assert crossing == []
    test_labels = Counter(r.label for r in splits["test"])
    all_labels = Counter(r.label for rows in splits.values() for r in rows)
    for label in LABELS:  # stratified: test share of each label within 3 points of the corpus share
        assert abs(test_labels[label] / len(splits["test"]) - all_labels[label] / sum(all_labels.values())) < 0.03


def test_masked_shingles_catch_swapped_names_and_numbers():
    a = shingles("Harlow Foods cuts its 2026 sales forecast to $4.1 billion")
    b = shingles("Qentra Labs cuts its 2027 sales forecast to $9.3 billion")
    assert a == b
    assert near_duplicate_pairs(["Harlow Foods cuts its 2026 sales forecast to $4.1 billion",
                                 "Qentra Labs cuts its 2027 sales forecast to $9.3 billion",
                                 "Regulators fine a lender over mis-sold loans"])[0][:2] == (0, 1)
