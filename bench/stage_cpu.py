"""Where the worker's CPU outside the model goes, stage by stage, in one run.

    .venv/bin/python bench/stage_cpu.py [--items 6000] [--rounds 3]

The throughput issue asks for at most 0.3 worker CPU-ms per item outside the
model. This bench splits that cost by what the worker does. Each round runs
three workers, one after another, on the same items:

* ``frameworks``: the worker's own Faust app (:func:`streams.app.worker_app`,
  with the same consumer, commit, producer and broker settings) and one agent
  that only keeps the delivery guarantee. It takes the input in batches
  (``noack_take``), sends one record per item to the scores topic
  (:func:`streams.kafka.delivery.deliver`, acks=all), then acks. No decoding,
  model, InfluxDB, mentions or aggregation: what Faust, aiokafka and asyncio
  cost before any product code runs.
* ``scoring``: the real worker (``streams.cli worker``) with aggregation off
  (``FINSENTRY_ALERTS__ENABLED=false``).
* ``scoring+aggregation``: the real worker as shipped.

All three run on tansu; the real workers also write to InfluxDB 1.6.7. They
are measured as ``bench/pipeline.py`` measures them: the worker's CPU from
``/proc`` (all threads, and the event-loop thread alone) between the first
publish and the last scores record. Outside the model is the worker's CPU per
item minus the model alone's, measured on the same texts in the same round.
The frameworks worker runs on an otherwise idle box, so its number is a floor:
next to inference threads, the same work costs more.

Prints a table and writes ``bench/results/stage_cpu.json``. Numbers, not
assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import machine, model_alone, run_backlog, sample_messages, scoring_texts  # noqa: E402  (same measures)
from streams.contracts.settings import BatchSettings, KafkaSettings, TopicSettings  # noqa: E402
from streams.tools import services  # noqa: E402
from streams.tools.publish import Outgoing  # noqa: E402

WORKERS = ("frameworks", "scoring", "scoring+aggregation")


def serve_frameworks_only() -> None:
    """The ``frameworks`` worker (run in its own process with a worker's environment)."""
    import faust

    from streams.app import worker_app
    from streams.contracts.settings import load_settings
    from streams.kafka.delivery import deliver

    settings = load_settings()
    app = worker_app(settings)
    t = settings.topics
    raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    inputs = app.topic(t.news, t.social, **raw)
    scores = app.topic(t.scores, **raw)

    @app.agent(inputs, name="frameworks-only")
    async def forward(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(settings.batch.size, within=settings.batch.wait):
            await deliver([(scores, e.message.key, e.message.value) for e in events], "forwarded items")
            for event in events:
                await stream.ack(event)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def _measure(kafka: KafkaSettings, topics: TopicSettings, pid: int, items: list[Outgoing]) -> dict:
    """Publish ``items`` at once; the worker's CPU per item until the last of them reached the scores topic."""
    cpu, start, _, end = run_backlog(kafka, topics, items, {"worker": pid}, timeout=600)
    return {"items_s": round(len(items) / (end - start), 1), "worker_cpu_ms_per_item": cpu["worker"],
            "event_loop_cpu_ms_per_item": cpu["worker_event_loop"]}


def run_frameworks(n_items: int) -> dict:
    topics = TopicSettings()
    broker = services.start_tansu()
    worker = None
    try:
        from streams.kafka.topics import create_topics, pipeline_topics

        kafka = KafkaSettings(broker=broker.url)
        asyncio.run(create_topics(kafka, pipeline_topics(topics)))
        workdir = Path(tempfile.mkdtemp(prefix="finsentry-stage-cpu-"))
        env = services.local_worker_env(broker.url, workdir / "faust", {})
        worker = subprocess.Popen([sys.executable, __file__, "--serve-frameworks-only"], cwd=ROOT, env=env,
                                  stdout=open(workdir / "worker.log", "wb"), stderr=subprocess.STDOUT)
        _measure(kafka, topics, worker.pid, sample_messages(1, 200, topics)[0])  # warm-up: joined, topics known
        return _measure(kafka, topics, worker.pid, sample_messages(2, n_items, topics)[0])
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        broker.stop()


def run_worker(n_items: int, model_dir: Path, settings: dict[str, str]) -> dict:
    topics = TopicSettings()
    workdir = Path(tempfile.mkdtemp(prefix="finsentry-stage-cpu-"))
    with services.local_pipeline(model_dir, workdir, settings) as stack:
        kafka = KafkaSettings(broker=stack.broker_url)
        _measure(kafka, topics, stack.worker.pid, sample_messages(1, 200, topics)[0])
        return _measure(kafka, topics, stack.worker.pid, sample_messages(2, n_items, topics)[0])


def model_alone_on_items(n_items: int, model_dir: Path) -> dict:
    topics = TopicSettings()
    texts = scoring_texts(sample_messages(2, n_items, topics)[0], topics)
    return model_alone(model_dir, "int8", texts, BatchSettings().size, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-frameworks-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--items", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stage_cpu.json")
    args = parser.parse_args()
    if args.serve_frameworks_only:
        serve_frameworks_only()
        return
    runs = {
        "frameworks": lambda: run_frameworks(args.items),
        "scoring": lambda: run_worker(args.items, args.model_dir, {"FINSENTRY_ALERTS__ENABLED": "false"}),
        "scoring+aggregation": lambda: run_worker(args.items, args.model_dir, {}),
    }
    rounds = []
    for n in range(1, args.rounds + 1):
        result: dict = {"round": n}
        for name in WORKERS:
            print(f"round {n}: {name} …", flush=True)
            result[name] = runs[name]()
        alone = model_alone_on_items(args.items, args.model_dir)
        result["model_alone"] = alone
        for name in WORKERS[1:]:
            result[name]["outside_model_cpu_ms_per_item"] = round(
                result[name]["worker_cpu_ms_per_item"] - alone["cpu_s_per_1000"], 3)
            result[name]["ratio_to_model_alone"] = round(result[name]["items_s"] / alone["items_s"], 3)
        rounds.append(result)
        print(json.dumps(result), flush=True)

    print(f"\nCPU-ms per item (event-loop thread in brackets); model alone {args.items} texts in calls of "
          f"{BatchSettings().size}")
    print(f"{'round':>5} {'frameworks':>16} {'scoring':>16} {'+aggregation':>16} {'model alone':>12} "
          f"{'outside model: scoring':>23} {'+aggregation':>13}")
    cell = lambda r: f"{r['worker_cpu_ms_per_item']:.3f} ({r['event_loop_cpu_ms_per_item']:.3f})"  # noqa: E731
    for r in rounds:
        print(f"{r['round']:>5} {cell(r['frameworks']):>16} {cell(r['scoring']):>16} "
              f"{cell(r['scoring+aggregation']):>16} {r['model_alone']['cpu_s_per_1000']:>12} "
              f"{r['scoring']['outside_model_cpu_ms_per_item']:>23} "
              f"{r['scoring+aggregation']['outside_model_cpu_ms_per_item']:>13}")
    summary = {name: {key: statistics.median(r[name][key] for r in rounds) for key in rounds[0][name]}
               for name in WORKERS}
    print(json.dumps({"medians": summary}))
    args.out.write_text(json.dumps({"command": " ".join(["bench/stage_cpu.py", *sys.argv[1:]]),
                                    "machine": machine(), "items": args.items, "rounds": rounds,
                                    "medians": summary}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
