"""The project's financial sentiment corpus: loading, validation, agreement, near-duplicate
detection and frozen splits.

The corpus (``models/corpus/financial_sentiment.jsonl``) is original text
written for this project under ``models/corpus/GUIDELINES.md`` and labelled in
two blind passes plus an adjudication pass; every row keeps the three labels and
its agreement level (``all``/``majority``/``none``), and the loader refuses a row
whose final label or agreement does not follow from its passes. The held-out
``ood_test.jsonl`` was written and labelled separately and is never trained or
tuned on. Splits are made once by ``python -m models.corpus split`` and
committed under ``models/corpus/splits/``; ``SPLITS.json`` records their sha256
so any change to the frozen test split is caught by the tests. Near-duplicates
(same sentence up to names and numbers) are clustered and each cluster goes to
one split, so no split shares a text, or a near-identical one, with another.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import typer

from streams.contracts.labels import LABELS

__all__ = [
    "LABELS", "DOMAINS", "STYLES", "AGREEMENTS", "CorpusRow", "CorpusError", "load_corpus", "shingles",
    "near_duplicate_pairs", "near_duplicate_rate", "make_splits", "load_split", "load_ood", "CORPUS_DIR",
    "cohen_kappa", "agreement_report",
]

DOMAINS = ("earnings", "guidance", "mergers", "analyst", "legal_regulatory", "management", "product",
           "operations", "capital", "macro", "credit", "crypto", "markets", "contracts", "company")
STYLES = ("press", "headline", "lede", "analyst", "social", "forum")
#: How the final label came about: both blind passes agreed; the adjudicator sided with one; all three differ.
AGREEMENTS = ("all", "majority", "none")
CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
CORPUS_FILE = CORPUS_DIR / "financial_sentiment.jsonl"
OOD_FILE = CORPUS_DIR / "ood_test.jsonl"
SPLITS_DIR = CORPUS_DIR / "splits"
REQUIRED = ("id", "text", "label", "domain", "style")


class CorpusError(ValueError):
    """A corpus file has malformed rows; the message lists them by line."""


@dataclass(frozen=True)
class CorpusRow:
    id: str
    text: str
    label: str
    domain: str
    style: str
    # labelling record (corpus files; other labelled files may lack it)
    label_a: str | None = None
    label_b: str | None = None
    label_c: str | None = None
    agreement: str | None = None
    author_label: str | None = None

    @property
    def label_index(self) -> int:
        return LABELS.index(self.label)


def _expected(a: str, b: str, c: str | None) -> tuple[str | None, str | None]:
    """(final label, agreement) that labels a, b and adjudication c imply."""
    if a == b:
        return a, "all"
    if c is None:
        return None, None
    return c, ("majority" if c in (a, b) else "none")


def _records(path: Path) -> Iterable[tuple[int, object]]:
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            for line, record in enumerate(csv.DictReader(fh), start=2):
                yield line, record
        return
    with open(path, encoding="utf-8") as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as exc:
                yield line, exc


def load_corpus(path: Path | str, *, label_map: dict[str, str] | None = None) -> list[CorpusRow]:
    """Read and validate a JSONL or CSV corpus; raise :class:`CorpusError` listing every bad row."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    problems: list[str] = []
    rows: list[CorpusRow] = []
    seen: dict[str, int] = {}
    for line, record in _records(path):
        where = f"{path.name}:{line}"
        if isinstance(record, Exception):
            problems.append(f"{where}: malformed JSON ({record.msg})")
            continue
        if not isinstance(record, dict):
            problems.append(f"{where}: expected an object with {', '.join(REQUIRED)}")
            continue
        missing = [k for k in REQUIRED if not isinstance(record.get(k), str) or not record[k].strip()]
        if missing:
            problems.append(f"{where}: missing or empty {', '.join(missing)}")
            continue
        label = (label_map or {}).get(record["label"].strip(), record["label"].strip())
        if label not in LABELS:
            problems.append(f"{where}: label {record['label']!r} is not one of {', '.join(LABELS)}")
        if record["domain"] not in DOMAINS:
            problems.append(f"{where}: domain {record['domain']!r} is not one of {', '.join(DOMAINS)}")
        if record["style"] not in STYLES:
            problems.append(f"{where}: style {record['style']!r} is not one of {', '.join(STYLES)}")
        if "\n" in record["text"]:
            problems.append(f"{where}: text contains a line break")
        if record["id"] in seen:
            problems.append(f"{where}: duplicate id {record['id']!r} (first on line {seen[record['id']]})")
        seen[record["id"]] = line
        record_labels = {k: record.get(k) for k in ("label_a", "label_b", "label_c", "agreement", "author_label")}
        if record_labels["label_a"] is not None or record_labels["agreement"] is not None:
            problems += [f"{where}: {msg}" for msg in _check_passes(label, record_labels)]
        if label in LABELS:
            rows.append(CorpusRow(record["id"], " ".join(record["text"].split()), label, record["domain"],
                                  record["style"], **record_labels))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CorpusError(f"{path}: {len(problems)} malformed row(s):\n  {shown}{more}")
    return rows


def _check_passes(label: str, r: dict) -> list[str]:
    a, b, c, agreement = r["label_a"], r["label_b"], r["label_c"], r["agreement"]
    bad = [k for k in ("label_a", "label_b") if r[k] not in LABELS]
    if c is not None and c not in LABELS:
        bad.append("label_c")
    if agreement not in AGREEMENTS:
        bad.append("agreement")
    if bad:
        return [f"{', '.join(bad)} missing or not valid"]
    final, level = _expected(a, b, c)
    if final is None:
        return ["label_a and label_b differ and there is no adjudication (label_c)"]
    if a == b and c is not None:
        return ["label_c given although the two passes agree"]
    out = []
    if label != final:
        out.append(f"label {label!r} does not follow from the passes ({a}, {b}, {c}) -> {final!r}")
    if agreement != level:
        out.append(f"agreement {agreement!r} but the passes ({a}, {b}, {c}) make it {level!r}")
    return out


_TOKEN = re.compile(r"\$?[\w'.%-]+|[^\w\s]", re.UNICODE)


def shingles(text: str, n: int = 3) -> frozenset[str]:
    """Word n-grams after masking names and numbers, so that a sentence with
    only its company names or figures swapped counts as the same sentence.

    >>> shingles("Acme cuts 2026 outlook by 5%") == shingles("Globex cuts 2027 outlook by 9%")
    True
    """
    tokens = []
    for tok in _TOKEN.findall(text):
        if re.search(r"\d", tok):
            tok = "<num>"
        elif tok.startswith("$") or tok[:1].isupper():
            tok = "<name>"
        tokens.append(tok.lower())
    if len(tokens) < n:
        return frozenset([" ".join(tokens)])
    return frozenset(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def near_duplicate_pairs(texts: list[str], threshold: float = 0.7, max_df: int = 200) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) of texts whose masked 3-gram sets overlap ≥ ``threshold``."""
    sets = [shingles(t) for t in texts]
    postings: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        for g in s:
            postings[g].append(i)
    pairs = []
    for i, s in enumerate(sets):
        shared: Counter = Counter()
        for g in s:
            ids = postings[g]
            if len(ids) <= max_df:
                shared.update(j for j in ids if j > i)
        for j, k in shared.items():
            jac = k / (len(s) + len(sets[j]) - k)
            if jac >= threshold:
                pairs.append((i, j, jac))
    return pairs


def near_duplicate_rate(texts: list[str], threshold: float = 0.7) -> float:
    """Share of texts that have at least one near-duplicate in ``texts``."""
    pairs = near_duplicate_pairs(texts, threshold)
    involved = {i for i, _, _ in pairs} | {j for _, j, _ in pairs}
    return len(involved) / max(1, len(texts))


def _clusters(n: int, pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return list(groups.values())


def make_splits(rows: list[CorpusRow], *, test: float = 0.1, validation: float = 0.05, seed: int = 2026,
                threshold: float = 0.7) -> dict[str, list[CorpusRow]]:
    """Stratified (label × style × domain) split of near-duplicate clusters; rows whose three labels all
    differ (agreement ``none``) go to no split."""
    rows = [r for r in rows if r.agreement != "none"]
    clusters = _clusters(len(rows), near_duplicate_pairs([r.text for r in rows], threshold))
    rng = random.Random(seed)
    strata: dict[tuple[str, str, str], list[list[int]]] = defaultdict(list)
    for cluster in clusters:
        first = rows[cluster[0]]
        strata[(first.label, first.style, first.domain)].append(cluster)
    out: dict[str, list[CorpusRow]] = {"train": [], "validation": [], "test": []}
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        total = sum(len(c) for c in group)
        taken = {"test": 0, "validation": 0}
        for cluster in group:
            if taken["test"] < test * total:
                part = "test"
            elif taken["validation"] < validation * total:
                part = "validation"
            else:
                part = "train"
            if part in taken:
                taken[part] += len(cluster)
            out[part].extend(rows[i] for i in cluster)
    for part in out.values():
        rng.shuffle(part)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_ood() -> list[CorpusRow]:
    """The out-of-distribution test set: written and labelled apart from the corpus; never tune on it."""
    return [r for r in load_corpus(OOD_FILE) if r.agreement != "none"]


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two labellings of the same items.

    >>> round(cohen_kappa(["x", "x", "y", "y"], ["x", "y", "y", "y"]), 3)
    0.5
    """
    n = len(a)
    if n == 0:
        return float("nan")
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    chance = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return 1.0 if chance == 1 else (observed - chance) / (1 - chance)


def agreement_report(rows: list[CorpusRow]) -> dict:
    """Pass A vs pass B: agreement and Cohen's kappa overall, per style and per domain; agreement levels."""
    labelled = [r for r in rows if r.label_a and r.label_b]

    def summary(group: list[CorpusRow]) -> dict:
        a, b = [r.label_a for r in group], [r.label_b for r in group]
        return {"n": len(group), "raw_agreement": round(sum(x == y for x, y in zip(a, b)) / max(1, len(group)), 4),
                "cohen_kappa": round(cohen_kappa(a, b), 4),
                "levels": dict(Counter(r.agreement for r in group))}

    by = {"style": defaultdict(list), "domain": defaultdict(list)}
    for r in labelled:
        by["style"][r.style].append(r)
        by["domain"][r.domain].append(r)
    return {"overall": summary(labelled),
            **{key: {k: summary(v) for k, v in sorted(groups.items())} for key, groups in by.items()},
            "final_vs_author": round(sum(r.label == r.author_label for r in labelled) / max(1, len(labelled)), 4)}


def load_split(name: str, directory: Path = SPLITS_DIR) -> list[CorpusRow]:
    """A frozen split ("train", "validation", "test"), checked against SPLITS.json."""
    path = directory / f"{name}.jsonl"
    record = json.loads((directory / "SPLITS.json").read_text())
    if _sha(path) != record["files"][f"{name}.jsonl"]:
        raise CorpusError(f"{path} does not match the sha256 frozen in SPLITS.json")
    return load_corpus(path)


app = typer.Typer(add_completion=False, help="Financial corpus tools.")


@app.command()
def build(parts: Path = typer.Option(CORPUS_DIR / "parts", help="folder of *.jsonl parts"),
          out: Path = typer.Option(CORPUS_FILE)) -> None:
    """Merge parts into one corpus file, dropping exact duplicate texts."""
    seen: set[str] = set()
    rows: list[CorpusRow] = []
    for path in sorted(parts.glob("*.jsonl")):
        for row in load_corpus(path):
            key = row.text.lower()
            if key not in seen:
                seen.add(key)
                rows.append(row)
    with open(out, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
    typer.echo(f"{len(rows)} rows -> {out}")


@app.command()
def stats(path: Path = typer.Argument(CORPUS_FILE)) -> None:
    """Counts by label, domain, style and the near-duplicate rate."""
    rows = load_corpus(path)
    texts = [r.text for r in rows]
    pairs = near_duplicate_pairs(texts)
    report = {
        "rows": len(rows),
        "labels": Counter(r.label for r in rows),
        "domains": Counter(r.domain for r in rows),
        "styles": Counter(r.style for r in rows),
        "near_duplicate_pairs": len(pairs),
        "near_duplicate_rate": round(near_duplicate_rate(texts), 4),
        "near_duplicate_definition": "Jaccard >= 0.7 of word 3-grams with names and numbers masked",
        "agreement": agreement_report(rows),
        "mean_words": round(sum(len(t.split()) for t in texts) / max(1, len(texts)), 1),
        "examples": [[texts[i], texts[j], round(s, 2)] for i, j, s in sorted(pairs, key=lambda p: -p[2])[:5]],
    }
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False))


@app.command()
def split(path: Path = typer.Argument(CORPUS_FILE), out: Path = typer.Option(SPLITS_DIR),
          seed: int = typer.Option(2026)) -> None:
    """Make and freeze train/validation/test splits (run once; the test split must never change)."""
    rows = load_corpus(path)
    parts = make_splits(rows, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, part in parts.items():
        target = out / f"{name}.jsonl"
        with open(target, "w", encoding="utf-8") as fh:
            for row in part:
                fh.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
        files[target.name] = _sha(target)
    summary = {name: {"rows": len(part), "labels": Counter(r.label for r in part)} for name, part in parts.items()}
    (out / "SPLITS.json").write_text(json.dumps({
        "source": path.name, "source_sha256": _sha(path), "seed": seed,
        "method": "near-duplicate clusters (masked 3-gram Jaccard >= 0.7) stratified by label x style x domain; "
                  "10% test, 5% validation; agreement 'none' rows in no split",
        "files": files, "summary": summary}, indent=2) + "\n")
    typer.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app()
