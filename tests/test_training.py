"""The quick recipe trains, exports, evaluates and writes a complete report whose
numbers are recomputed here from the saved predictions."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from models.corpus import LABELS
from models.evaluate import evaluate, metrics_from_predictions, read_labelled
from models.train import QUICK, train

pytestmark = pytest.mark.slow


def _flatten(tree, prefix=""):
    """Nested dicts/lists -> {"a.b.0": leaf}."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out = {}
    for key, value in items:
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


@pytest.fixture(scope="module")
def quick_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick") / "checkpoint"
    record = train(out, replace(QUICK, threads=0))
    return out, record


def test_quick_recipe_records_what_it_trained_on(quick_checkpoint):
    out, record = quick_checkpoint
    saved = json.loads((out / "training.json").read_text())
    assert saved["recipe"]["financial_rows"] == QUICK.financial_rows
    assert saved["data"]["financial_train_rows"] == QUICK.financial_rows
    assert len(saved["data"]["financial_train_sha256"]) == 64
    assert set(saved["data"]["financial_split_files_sha256"]) == {"train.jsonl", "validation.jsonl", "test.jsonl"}
    assert saved["history"] and 0 <= saved["best"]["financial_val_macro_f1"] <= 1
    assert record["train_seconds"] < 180


def test_report_is_complete_and_recomputable(quick_checkpoint, tmp_path):
    checkpoint, _ = quick_checkpoint
    from models.corpus import SPLITS_DIR

    examples = read_labelled(SPLITS_DIR / "test.jsonl")[:300]
    report = evaluate(checkpoint, examples, tmp_path / "report", "test.jsonl (first 300)")
    for name in ("report.json", "report.md", "confusion.png", "predictions.jsonl"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert (tmp_path / "report" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    model = report["systems"]["model"]
    assert set(report["systems"]) == {"model", "vader", "loughran_mcdonald"}
    assert set(model["per_class"]) == set(LABELS) and set(model["roc_auc_ovr"]) == set(LABELS)
    assert model["per_domain"] and sum(d["n"] for d in model["per_domain"].values()) == 300
    assert np.array(model["confusion"]["matrix"]).sum() == 300

    recomputed = _flatten(metrics_from_predictions(tmp_path / "report" / "predictions.jsonl"))
    expected = _flatten(model)
    assert recomputed.keys() == expected.keys()
    for key, value in expected.items():
        assert recomputed[key] == (value if not isinstance(value, float) else pytest.approx(value, abs=1e-12)), key
    # and the headline numbers by hand
    rows = [json.loads(line) for line in open(tmp_path / "report" / "predictions.jsonl")]
    accuracy = np.mean([r["label"] == r["predicted"] for r in rows])
    assert model["accuracy"] == pytest.approx(accuracy)
    f1s = []
    for label in LABELS:
        tp = sum(r["label"] == label and r["predicted"] == label for r in rows)
        fp = sum(r["label"] != label and r["predicted"] == label for r in rows)
        fn = sum(r["label"] == label and r["predicted"] != label for r in rows)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    assert model["macro_f1"] == pytest.approx(np.mean(f1s))
    md = (tmp_path / "report" / "report.md").read_text()
    for name in ("model", "vader", "loughran_mcdonald"):
        assert f"| {name} |" in md


def test_label_columns_can_be_mapped(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("tweet,sentiment\nShares soar,pos\nShares sink,neg\nMeeting on Monday,neu\n")
    rows = read_labelled(path, text_col="tweet", label_col="sentiment",
                         label_map={"pos": "positive", "neg": "negative", "neu": "neutral"})
    assert [r.label for r in rows] == [2, 0, 1]
    with pytest.raises(ValueError, match="label outside"):
        read_labelled(path, text_col="tweet", label_col="sentiment")


def test_keep_layers_prunes_the_encoder_and_refuses_bad_indices(tiny_checkpoint, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from models.train import keep_layers

    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint, local_files_only=True)
    assert len(model.base_model.encoder.layer) == 2
    with pytest.raises(ValueError, match="increasing layer indices below 2"):
        keep_layers(model, (1, 0))
    with pytest.raises(ValueError):
        keep_layers(model, (2,))
    keep_layers(model, (1,))
    model.save_pretrained(tmp_path / "pruned")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned", local_files_only=True)
    assert again.config.num_hidden_layers == 1 and len(again.base_model.encoder.layer) == 1


def test_distilled_student_has_fewer_layers_records_its_teacher_and_exports(quick_checkpoint, tmp_path):
    from export.onnx_export import ExportOptions, export_checkpoint
    from streams.runtime import load_model

    teacher, _ = quick_checkpoint
    out = tmp_path / "student"
    record = train(out, replace(QUICK, teacher=str(teacher), keep_layers=(0, 3)))
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert record["method"].startswith("distilled: teacher's layers [0, 3]")
    assert str(teacher) in record["base"]
    assert 0.5 <= record["best"]["teacher_agreement"] <= 1
    manifest = export_checkpoint(out, tmp_path / "model", ExportOptions(name="student", version="1", fp16=False))
    assert manifest.variants["int8"].parity["label_agreement"] >= 0.97
    assert load_model(tmp_path / "model").predict(["Acme beats estimates"])[0].label in LABELS
