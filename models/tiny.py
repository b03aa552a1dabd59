"""A tiny BERT classifier with the real MiniLM tokenizer, for fast tests.

Randomly initialised (seeded) and saved with ``save_pretrained`` exactly like a
fine-tuned checkpoint, so tests exercise the real export and serving path in
seconds. It is not a useful sentiment model.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.data import LABELS

__all__ = ["make_tiny_checkpoint"]


def make_tiny_checkpoint(out: Path, seed: int = 7, hidden: int = 32, layers: int = 2) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from models.train import base_encoder_path

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_encoder_path(), local_files_only=True, use_fast=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=hidden * 2, max_position_embeddings=512, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # spread the logits so labels are not all ties
        model.classifier.weight.mul_(20.0)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps({"base": "tiny random BERT (tests only)", "seed": seed}) + "\n")
    return out


def train_tiny_sentiment(out: Path, steps: int = 200, seed: int = 7, batch_size: int = 32) -> Path:
    """A tiny BERT briefly trained on the corpus train split (~15 s on 2 cores).

    Not a good model (about 70 % accuracy on the test split) but one whose
    labels vary with the text, so end-to-end alert tests can build negative
    bursts out of texts the served model itself calls negative.
    """
    import random

    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from models.corpus import load_split

    out = make_tiny_checkpoint(out, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = BertForSequenceClassification.from_pretrained(out, local_files_only=True)
    rows = [(ex.text, LABELS.index(ex.label)) for ex in load_split("train")]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = rng.sample(rows, batch_size)
        enc = tokenizer([t for t, _ in batch], padding=True, truncation=True, max_length=48, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out)
    (out / "training.json").write_text(json.dumps({"base": "tiny BERT, corpus train split", "steps": steps,
                                                   "seed": seed}) + "\n")
    return out
