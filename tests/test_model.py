"""Exported model directories: parity with PyTorch, verification, provider."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.evaluate import model_predictor

from export.onnx_export import PARITY_SAMPLE
from streams.runtime import ManifestError, load_model, read_manifest, softmax

#: fp32 ONNX vs PyTorch: max |probability difference| allowed.
FP32_PROB_TOL = 1e-5


def _torch_probs(checkpoint, texts):
    """Probabilities from the PyTorch checkpoint itself (truncation at 128 tokens)."""
    return model_predictor(checkpoint)[1](list(texts))


def test_manifest_records_labels_hashes_and_parity(tiny_model_dir):
    manifest = read_manifest(tiny_model_dir)
    assert manifest.labels == ["negative", "neutral", "positive"]
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json"} <= set(manifest.files)
    assert all(len(h) == 64 for h in manifest.files.values())
    assert manifest.variants["fp32"].parity["max_abs_logit_diff"] <= 1e-4
    assert manifest.variants["int8"].parity["label_agreement"] >= 0.97
    assert manifest.export["onnxruntime"] and manifest.max_length == 128


def test_served_probabilities_match_pytorch(tiny_model_dir, tiny_checkpoint):
    texts = PARITY_SAMPLE + ["$AAPL to the moon", "Guidance cut again"]
    model = load_model(tiny_model_dir, variant="fp32")
    short = [t for t in texts if len(model.windows([t])[0]) == 1]
    assert len(short) == len(texts) - 1  # PARITY_SAMPLE has one text longer than max_length
    ours = model.predict_proba(short)
    assert np.abs(ours - _torch_probs(tiny_checkpoint, short)).max() < FP32_PROB_TOL
    # a long text's first window is what PyTorch sees with truncation
    first_windows = softmax(model.logits(texts))
    assert np.abs(first_windows - _torch_probs(tiny_checkpoint, texts)).max() < FP32_PROB_TOL
    # batch composition (length-sorted sub-batches, padding) must not change probabilities
    singles = np.concatenate([model.predict_proba([t]) for t in short])
    assert np.abs(singles - ours).max() < FP32_PROB_TOL


def test_runtime_reports_cpu_provider_here(tiny_model_dir):
    model = load_model(tiny_model_dir)
    assert model.provider == "CPUExecutionProvider"
    assert model.variant == "int8"  # CPU default from the manifest


@pytest.mark.parametrize("target", ["model.int8.onnx", "tokenizer.json"])
def test_tampered_file_is_refused(tiny_model_dir, tmp_path, target):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    with open(copy / target, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ManifestError, match=f"{target} sha256"):
        load_model(copy)


def test_incomplete_or_missing_directory_is_refused(tiny_model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ManifestError, match="tokenizer.json is missing"):
        load_model(copy)
    with pytest.raises(ManifestError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (copy / "manifest.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ManifestError, match="not a valid manifest"):
        load_model(copy)


def test_unknown_variant_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ManifestError, match="no variant 'bf16'"):
        load_model(tiny_model_dir, variant="bf16")


def test_an_export_leaves_the_working_directory_as_it_was(tiny_checkpoint, tmp_path, monkeypatch):
    from export.onnx_export import ExportOptions, export_checkpoint

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "notes.txt").write_text("mine")
    monkeypatch.chdir(cwd)
    export_checkpoint(tiny_checkpoint, Path("model-out"), ExportOptions(name="tiny-test", version="1"))
    assert sorted(p.name for p in cwd.iterdir()) == ["model-out", "notes.txt"]  # relative --out still works
    assert (cwd / "model-out" / "manifest.json").exists()


def test_onnx_runtime_temp_files_land_in_the_export_scratch_directory(tmp_path, monkeypatch):
    """ORT's symbolic shape inference saves ``sym_shape_infer_temp.onnx`` into the current directory
    when it cannot infer every shape (the junk once committed at the repository root)."""
    import onnx.helper as oh
    from onnx import TensorProto
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from export.onnx_export import scratch_directory

    graph = oh.make_graph([oh.make_node("Mystery", ["x"], ["y"], domain="com.example")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.example", 1)])
    unguarded = tmp_path / "unguarded"
    unguarded.mkdir()
    monkeypatch.chdir(unguarded)
    with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
        SymbolicShapeInference.infer_shapes(model)
    assert (unguarded / "sym_shape_infer_temp.onnx").exists()  # what ORT does on its own
    guarded = tmp_path / "guarded"
    guarded.mkdir()
    monkeypatch.chdir(guarded)
    with scratch_directory() as scratch:
        with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
            SymbolicShapeInference.infer_shapes(model)
        assert (scratch / "sym_shape_infer_temp.onnx").exists()
    assert list(guarded.iterdir()) == [] and not scratch.exists()

