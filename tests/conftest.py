"""Real services for the tests: a Kafka-protocol broker, InfluxDB 1.6.7,
VictoriaMetrics (v2 write API), a tiny exported model and worker processes.

Every service runs on a free loopback port and is stopped at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from streams.tools import services  # noqa: E402
from streams.tools.services import new_pipeline, stop_workers  # noqa: E402


@pytest.fixture(scope="session")
def broker():
    service = services.start_tansu()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def influxd():
    service = services.start_influxd()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def victoria():
    service = services.start_victoria_metrics()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from models.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    from export.onnx_export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("tiny-model") / "model"
    export_checkpoint(tiny_checkpoint, out, ExportOptions(name="tiny-test", version="1"))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir_v2(tmp_path_factory) -> Path:
    """A second model version (other weights), for hot-swap tests."""
    from export.onnx_export import ExportOptions, export_checkpoint
    from models.tiny import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-v2") / "checkpoint", seed=8)
    out = tmp_path_factory.mktemp("tiny-model-v2") / "model"
    export_checkpoint(checkpoint, out, ExportOptions(name="tiny-test", version="2"))
    return out


@pytest.fixture(scope="session")
def tiny_sentiment_model_dir(tmp_path_factory) -> Path:
    """A tiny model briefly trained on the corpus: its labels depend on the text."""
    from export.onnx_export import ExportOptions, export_checkpoint
    from models.tiny import train_tiny_sentiment

    checkpoint = train_tiny_sentiment(tmp_path_factory.mktemp("tiny-sentiment") / "checkpoint")
    out = tmp_path_factory.mktemp("tiny-sentiment-model") / "model"
    export_checkpoint(checkpoint, out, ExportOptions(name="tiny-sentiment", version="1", int8=False, fp16=False))
    return out


@pytest.fixture(scope="session")
def model_pool(tiny_sentiment_model_dir):
    """Corpus test texts grouped by the label the served (tiny) model gives them."""
    from streams.tools.generator import TextPool
    from streams.runtime import load_model

    model = load_model(tiny_sentiment_model_dir, warm_up=False)
    texts = [t for rows in TextPool.from_corpus().texts.values() for t, _ in rows]
    preds = model.predict(texts)
    pool = TextPool.from_labelled([(t, p.label) for t, p in zip(texts, preds)], style="headline")
    assert all(len(v) >= 50 for v in pool.texts.values()), {k: len(v) for k, v in pool.texts.items()}
    return pool


@pytest.fixture
def pipeline(broker, influxd, tiny_model_dir, tmp_path):
    """A fresh pipeline namespace on the shared broker and InfluxDB."""
    pipe = new_pipeline(broker, influxd, tiny_model_dir, tmp_path)
    yield pipe
    stop_workers(pipe)
