"""Runtime behaviour: chunking, variant choice, export gate, hot swap."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from streams.runtime import read_manifest
from export.onnx_export import ExportOptions, ParityError, ParitySet, export_checkpoint
from streams.runtime import choose_variant, combine_chunks, load_model, softmax
from streams.runtime.session import open_session
from streams.runtime import ModelWatcher


def test_long_text_probabilities_are_the_token_weighted_mean_of_its_windows(tiny_model_dir):
    model = load_model(tiny_model_dir, variant="fp32", chunk_overlap=16, max_chunks=8)
    text = " ".join(f"Quarter {i}: revenue rose while costs fell at the Acme plant." for i in range(25))
    (windows,) = model.windows([text])
    assert 3 <= len(windows) <= 8 and all(len(w.ids) <= model.manifest.max_length for w in windows)
    assert windows[0].ids[-17:-1] == windows[1].ids[1:17]  # consecutive windows share 16 tokens
    # by hand: run each window on its own through the ONNX session, softmax, weight by length
    session = model._session
    probs = []
    for w in windows:
        feed = {"input_ids": np.array([w.ids]), "attention_mask": np.array([w.attention_mask]),
                "token_type_ids": np.array([w.type_ids])}
        feed = {k: v for k, v in feed.items() if k in {i.name for i in session.get_inputs()}}
        probs.append(softmax(session.run(["logits"], feed)[0])[0])
    weights = np.array([len(w.ids) for w in windows], dtype=float)
    expected = (np.array(probs) * weights[:, None]).sum(0) / weights.sum()
    got = model.predict_proba(["short one", text, "another short one"])
    np.testing.assert_allclose(got[1], expected, atol=1e-6)
    np.testing.assert_allclose(got[1], combine_chunks(np.array(probs), weights), atol=1e-12)


def test_max_chunks_caps_the_work_per_text(tiny_model_dir):
    model = load_model(tiny_model_dir, variant="fp32", max_chunks=2)
    assert len(model.windows(["word " * 5000])[0]) == 2


def test_variant_follows_the_provider_unless_told(tiny_model_dir):
    manifest = read_manifest(tiny_model_dir)
    assert choose_variant(manifest, "CUDAExecutionProvider") == "fp16"
    assert choose_variant(manifest, "TensorrtExecutionProvider") == "fp16"
    assert choose_variant(manifest, "CPUExecutionProvider") == "int8"
    assert choose_variant(manifest, "CPUExecutionProvider", "fp32") == "fp32"
    # asking for CUDA where it is not installed: ORT runs CPU, and says so
    model = load_model(tiny_model_dir, providers=["CUDAExecutionProvider"])
    assert model.provider == "CPUExecutionProvider" and model.variant == "int8"


def test_export_gate_refuses_and_writes_nothing(tiny_checkpoint, tmp_path):
    parity = ParitySet(["good news", "bad news", "no news"], [2, 0, 1])
    with pytest.raises(ParityError, match="label agreement"):
        export_checkpoint(tiny_checkpoint, tmp_path / "m", ExportOptions(min_agreement=1.01, fp16=False),
                          parity=parity)
    assert not (tmp_path / "m").exists()
    with pytest.raises(ParityError, match="fp32 ONNX logits differ"):
        export_checkpoint(tiny_checkpoint, tmp_path / "m", ExportOptions(fp32_atol=0.0, int8=False, fp16=False),
                          parity=parity)
    assert not (tmp_path / "m").exists()


def test_manifest_has_every_variant_gate_result(tiny_model_dir):
    manifest = read_manifest(tiny_model_dir)
    assert set(manifest.variants) == {"fp32", "int8", "fp16"}
    for key in ("int8", "fp16"):
        parity = manifest.variants[key].parity
        assert parity["label_agreement"] >= 0.97 and parity["macro_f1_drop"] <= 0.01
        assert parity["n_labelled"] >= 500
    assert manifest.export["graph_optimization"]["fp16"]["fused_operators"]["Attention"] == 2
    assert manifest.source["training"]["seed"] == 7


def test_watcher_swaps_on_a_new_version_and_keeps_the_old_one_on_a_bad_one(tiny_model_dir, tiny_model_dir_v2,
                                                                              tmp_path):
    import asyncio

    current = tmp_path / "current"
    os.symlink(tiny_model_dir, current)
    watcher = ModelWatcher(current, lambda d: load_model(d))
    model = load_model(current)

    async def check():
        return await watcher.check(model)

    assert asyncio.run(check()) is None  # nothing changed
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir_v2, broken)
    (broken / "model.int8.onnx").write_bytes(b"tampered")
    os.symlink(broken, tmp_path / "next")
    os.replace(tmp_path / "next", current)
    assert asyncio.run(check()) is None and watcher.rejected == 1
    os.symlink(tiny_model_dir_v2, tmp_path / "next")
    os.replace(tmp_path / "next", current)  # atomic re-point
    new = asyncio.run(check())
    assert new is not None and new.version == "2" and watcher.swaps == 1
    assert json.loads((current / "manifest.json").read_text())["version"] == "2"


def test_parallel_sub_batches_return_rows_in_input_order(tiny_model_dir):
    texts = [f"Acme {'shares fell sharply' if i % 3 else 'beat estimates'} in session {i} " + "word " * (i % 17)
             for i in range(37)] + ["long " * 400]  # odd count, mixed lengths, one chunked text
    serial = load_model(tiny_model_dir, variant="fp32", max_batch=64, parallel=1)
    parallel = load_model(tiny_model_dir, variant="fp32", max_batch=3, parallel=3)
    assert parallel.parallel == 3 and parallel.max_batch == 3
    np.testing.assert_allclose(parallel.predict_proba(texts), serial.predict_proba(texts), atol=1e-5)
    one_by_one = np.concatenate([serial.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(parallel.predict_proba(texts), one_by_one, atol=1e-5)


def test_cpu_defaults_run_one_single_threaded_sub_batch_per_core(tiny_model_dir):
    model = load_model(tiny_model_dir)
    cores = len(os.sched_getaffinity(0))
    assert model.provider == "CPUExecutionProvider"
    assert (model.max_batch, model.parallel) == (4, cores)


def test_cpu_sessions_keep_no_per_shape_memory_plans(tiny_model_dir):
    """Every sub-batch has a shape of its own: a per-shape plan cache only grows (bench/session_memory.py)."""
    manifest = read_manifest(tiny_model_dir)
    session = open_session(tiny_model_dir / manifest.variant("fp32").file, ["CPUExecutionProvider"])
    assert session.get_session_options().enable_mem_pattern is False


def test_int8_scores_with_one_window_sub_batches_do_not_depend_on_neighbours(tiny_model_dir):
    # Dynamic int8 quantization scales activations per sub-batch; scored one window
    # per sub-batch (FINSENTRY_RUNTIME__MAX_BATCH=1) a text's score is the same in
    # any company, which is what a replay that must reproduce scores needs.
    texts = [f"Acme {'plunges after fraud probe' if i % 2 else 'raises guidance'} {i} " + "tick " * (i % 9)
             for i in range(24)]
    model = load_model(tiny_model_dir, variant="int8", max_batch=1)
    alone = np.concatenate([model.predict_proba([t]) for t in texts])
    together = model.predict_proba(texts)
    reordered = model.predict_proba(texts[::-1])[::-1]
    assert np.array_equal(alone, together) and np.array_equal(alone, reordered)
    batched = load_model(tiny_model_dir, variant="int8", max_batch=4)  # the default trades this for speed
    assert not np.array_equal(batched.predict_proba(texts), alone)
