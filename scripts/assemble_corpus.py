"""Assemble corpus v2 from the writers' drafts and the blind labelling passes (run once; kept as the record
of how ``models/corpus/financial_sentiment.jsonl`` and ``models/corpus/ood_test.jsonl`` were made).

Inputs (a working folder, not in the repository): ``drafts/<part>/*.jsonl`` (text, style, domain and the
writer's intended label), ``ood/*.jsonl`` (the out-of-distribution set, written separately), and
``label/<batch>/`` with ``input.jsonl`` (opaque key, text: what the labellers saw, shuffled),
``pass-A.csv``, ``pass-B.csv`` and the adjudication batches' ``pass-C.csv``; ``keymap-<name>.json`` maps
keys back to rows. Version 1 rows keep their ids; their old label becomes ``author_label``.

    git show 6fa46b5:models/corpus/financial_sentiment.jsonl > /tmp/v1.jsonl   # corpus v1
    python scripts/assemble_corpus.py /path/to/corpus_work /tmp/v1.jsonl
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.corpus import CORPUS_DIR, near_duplicate_pairs  # noqa: E402

SHORT = {"pos": "positive", "neu": "neutral", "neg": "negative"}
PART_IDS = {"p1-press-results": "pr2", "p2-press-business": "pb2", "p3-press-corporate": "pc2",
            "p4-headlines": "hl2", "p5-ledes-analyst-macro": "la2", "p6-social": "so2", "p7-forum": "fo2",
            "p8-posts-jargon": "pj2"}


def _passes(work: Path) -> dict[str, dict[str, str]]:
    """key -> {"a": label, "b": label, "c": label?} over every batch."""
    labels: dict[str, dict[str, str]] = {}
    for batch in sorted((work / "label").iterdir()):
        for letter in "ABC":
            path = batch / f"pass-{letter}.csv"
            if path.exists():
                for key, label in csv.reader(open(path)):
                    labels.setdefault(key, {})[letter.lower()] = SHORT[label]
    return labels


def _final(passes: dict[str, str]) -> tuple[str, str]:
    a, b, c = passes["a"], passes["b"], passes.get("c")
    if a == b:
        return a, "all"
    if c is None:
        raise ValueError(f"disagreement without adjudication: {passes}")
    return c, ("majority" if c in (a, b) else "none")


def _row(rid: str, text: str, style: str, domain: str, author: str, passes: dict[str, str]) -> dict:
    label, agreement = _final(passes)
    return {"id": rid, "text": " ".join(text.split()), "label": label, "domain": domain, "style": style,
            "label_a": passes["a"], "label_b": passes["b"], "label_c": passes.get("c"), "agreement": agreement,
            "author_label": author}


def _drafts(folder: Path) -> list[tuple[str, dict]]:
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                out.append((f"{folder.name}/{path.name}:{n}", json.loads(line)))
    return out


def main(work: Path, v1_path: Path) -> None:
    labels = _passes(work)
    by_source = {}
    for path in sorted(work.glob("keymap-*.json")):
        by_source.update({source: labels[key] for key, source in json.loads(path.read_text()).items()})

    rows: list[dict] = []
    v1 = [json.loads(line) for line in open(v1_path)]
    for r in v1:
        rows.append(_row(r["id"], r["text"], r["style"], r["domain"], r["label"], by_source[f"v1/{r['id']}"]))
    for part, prefix in PART_IDS.items():
        for n, (source, r) in enumerate(_drafts(work / "drafts" / part), 1):
            rows.append(_row(f"{prefix}-{n:05d}", r["text"], r["style"], r["domain"], r["intent"], by_source[source]))
    ood = [_row(f"ood-{n:05d}", r["text"], r["style"], r["domain"], r["intent"], by_source[source])
           for n, (source, r) in enumerate(_drafts(work / "ood"), 1)]

    # exact and near-duplicates: keep the first of each cluster (corpus), drop OOD rows close to any corpus row
    seen, unique = set(), []
    for r in rows:
        if r["text"].lower() not in seen:
            seen.add(r["text"].lower())
            unique.append(r)
    drop = {j for _, j, _ in near_duplicate_pairs([r["text"] for r in unique])}
    corpus = [r for i, r in enumerate(unique) if i not in drop]
    texts = [r["text"] for r in corpus] + [r["text"] for r in ood]
    close = {j - len(corpus) for i, j, _ in near_duplicate_pairs(texts) if i < len(corpus) <= j}
    close |= {i - len(corpus) for i, j, _ in near_duplicate_pairs(texts) if len(corpus) <= i < j}
    ood_kept = [r for n, r in enumerate(ood) if n not in close and r["text"].lower() not in seen]

    for path, data in ((CORPUS_DIR / "financial_sentiment.jsonl", corpus), (CORPUS_DIR / "ood_test.jsonl", ood_kept)):
        with open(path, "w", encoding="utf-8") as fh:
            for r in data:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(json.dumps({
        "corpus_rows": len(corpus), "exact_duplicates_dropped": len(rows) - len(unique),
        "near_duplicates_dropped": len(drop), "ood_rows": len(ood_kept),
        "ood_dropped_close_to_corpus": len(ood) - len(ood_kept),
        "agreement": Counter(r["agreement"] for r in corpus), "labels": Counter(r["label"] for r in corpus),
        "styles": Counter(r["style"] for r in corpus), "ood_agreement": Counter(r["agreement"] for r in ood_kept),
    }, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
