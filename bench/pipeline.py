"""End-to-end throughput and latency of the live pipeline on this machine.

    .venv/bin/python bench/pipeline.py [--model-dir models/default] [--variant int8 --variant fp16]
                                       [--batch-size 32 --batch-size 64] [--items 3000]
    .venv/bin/python bench/pipeline.py --against DIR --rounds 6 [--items 12000]   # before/after in one run

For each (variant, batch size) it starts a fresh broker (tansu), InfluxDB 1.x
and a real worker process, then measures:

* **throughput**: ``--items`` sample items published as fast as possible;
  items/s = items / (first publish -> last point stored in InfluxDB). The
  end is the Kafka timestamp of the last score record (the worker sends it
  only after InfluxDB accepted its batch), read by a consumer in this
  process; InfluxDB is counted once afterwards to confirm every point is
  there. (Polling InfluxDB with ``count()`` every 50 ms, as this bench did
  before, cost InfluxDB more CPU than storing the points and took it from
  the pipeline being measured.)
* **latency**: items published at ``--latency-load`` × the measured
  throughput; per item, Kafka timestamp of its score record (sent only after
  InfluxDB accepted the batch) minus its publish timestamp; p50/p99;
* **CPU**: CPU-seconds per 1,000 items of the worker, the broker and InfluxDB
  during the throughput run (``/proc/<pid>/stat``, all threads), and of the
  worker's event-loop thread alone (where everything but inference runs);
* **the model alone**: the same texts (each item's ``scoring_text``: headline
  or post text, then body, as the worker scores it) through the same model
  directory and variant (``streams.runtime``) in calls of the batch size, in
  this process, just before and just after the throughput run (the mean of
  the two): items/s and CPU-s per 1,000; the pipeline's ratio to it.

``--against DIR`` (another checkout, e.g. ``git worktree add /tmp/before
<commit>``) runs the worker of that tree and of this one alternately,
``--rounds`` times each (this script, its load and the model alone stay this
tree's), and prints each measure's after/before ratio per pair and its median:
this box's speed drifts by 10-20 % within minutes, so only pairs of runs
minutes apart compare.

Prints a table and writes ``bench/results/pipeline.json``. Numbers, not
assertions: these machines are noisy, compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.tools import services  # noqa: E402
from streams.tools.publish import Outgoing, publish, route  # noqa: E402
from streams.tools.samples import sample_items  # noqa: E402
from streams.contracts.schema import parse_item  # noqa: E402
from streams.contracts.settings import BatchSettings, KafkaSettings, TopicSettings  # noqa: E402


def _count(influx_url: str, db: str) -> int:
    q = urllib.parse.urlencode({"db": db, "q": "SELECT count(score) FROM sentiment"})
    body = json.loads(urllib.request.urlopen(f"{influx_url}/query?{q}").read())
    series = body["results"][0].get("series")
    return series[0]["values"][0][1] if series else 0


def _wait_points(influx_url: str, db: str, expected: int, timeout: float, every: float = 0.5) -> float:
    """Wait until InfluxDB holds ``expected`` points, asking ``every`` seconds (each ``count()`` scans them
    all and costs InfluxDB CPU: poll often only where the time is the result and the load is the same
    for what it is compared with)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _count(influx_url, db) >= expected:
            return time.monotonic()
        time.sleep(every)
    raise TimeoutError(f"only {_count(influx_url, db)}/{expected} points after {timeout}s")


async def _score_timestamps(kafka: KafkaSettings, topic: str, ids: set[str], timeout: float) -> dict[str, int]:
    """Kafka timestamp (ms) of the first score record of each of ``ids`` (records are keyed by item id:
    only keys are decoded, so reading alongside a timed run takes little CPU from it)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, int] = {}
    try:
        deadline = time.monotonic() + timeout
        while len(found) < len(ids) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    item_id = record.key.decode("utf-8") if record.key else ""
                    if item_id in ids:
                        found.setdefault(item_id, record.timestamp)
    finally:
        await consumer.stop()
    return found


def machine() -> dict:
    """What a bench result records about the box it ran on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def _cpu_seconds(pid: int, thread: int | None = None) -> float:
    """utime + stime of a process (all its threads), or of one of its threads, seconds."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample_messages(seed: int, n: int, topics: TopicSettings) -> tuple[list[Outgoing], int]:
    """``n`` sample items routed to their input topics, and how many score points they make (one per ticker)."""
    items = list(sample_items(n, seed=seed))
    return [route(json.dumps(it).encode(), topics) for it in items], sum(len(it["tickers"]) for it in items)


def scoring_texts(messages: list[Outgoing], topics: TopicSettings) -> list[str]:
    """Exactly what the worker feeds the model for each message: headline (or post text) and body."""
    kind = topics.kind_by_topic
    return [parse_item(m.value, kind=kind[m.topic], max_text_chars=BatchSettings().max_text_chars).scoring_text
            for m in messages]


def run_backlog(kafka: KafkaSettings, topics: TopicSettings, messages: list[Outgoing], pids: dict[str, int],
                timeout: float = 900) -> tuple[dict[str, float], float, float, float]:
    """Publish ``messages`` at once and wait for each one's score record.

    Returns CPU-s per 1,000 messages of each process in ``pids`` (plus ``worker_event_loop``, the
    event-loop thread of ``pids["worker"]``) from just before the first publish to the last score record,
    and the first publish, last publish and last score record times (epoch s).
    """
    worker = pids["worker"]
    ids = {m.key.decode() for m in messages}

    def cpu_now() -> dict[str, float]:
        return {**{name: _cpu_seconds(pid) for name, pid in pids.items()},
                "worker_event_loop": _cpu_seconds(worker, worker)}

    async def publish_and_watch() -> tuple[dict[str, float], float, float, dict[str, int]]:
        watch = asyncio.create_task(_score_timestamps(kafka, topics.scores, ids, timeout))
        await asyncio.sleep(0.5)  # the consumer joins before the first item is published
        cpu_at_start, first = cpu_now(), time.time()
        await publish(messages, kafka)
        return cpu_at_start, first, time.time(), await watch

    cpu_before, start, published, scored = asyncio.run(publish_and_watch())
    cpu_after = cpu_now()
    if len(scored) < len(ids):
        raise TimeoutError(f"only {len(scored)}/{len(ids)} score records after {timeout} s")
    cpu = {name: round((cpu_after[name] - cpu_before[name]) / len(messages) * 1000, 3) for name in cpu_after}
    return cpu, start, published, max(scored.values()) / 1000


def model_alone(model_dir: Path, variant: str, texts: list[str], batch_size: int, env: dict[str, str]) -> dict:
    """The model by itself on ``texts`` (worker runtime settings from ``env``), best of 2 passes."""
    from streams.contracts.settings import RuntimeSettings
    from streams.runtime import load_model

    runtime = RuntimeSettings.model_validate({k.split("__", 1)[1].lower(): v for k, v in env.items()
                                              if k.startswith("FINSENTRY_RUNTIME__")})
    model = load_model(model_dir, variant=variant, intra_op_threads=runtime.intra_op_threads,
                       max_batch=runtime.max_batch, parallel=runtime.parallel, warm_up=True)
    best = None
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(texts), batch_size):
            model.predict_proba(texts[i : i + batch_size])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best[0]:
            best = (wall, cpu)
    wall, cpu = best
    return {"items_s": round(len(texts) / wall, 1), "cpu_s_per_1000": round(cpu / len(texts) * 1000, 3)}


def run_case(model_dir: Path, variant: str, batch_size: int, n_items: int, latency_load: float,
             latency_items: int, env: dict[str, str] | None = None, worker_root: Path | None = None) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="finsentry-bench-"))
    settings = {"FINSENTRY_MODEL_VARIANT": variant, "FINSENTRY_BATCH__SIZE": str(batch_size), **(env or {})}
    with services.local_pipeline(model_dir, workdir, settings, worker_root=worker_root) as stack:
        kafka = KafkaSettings(broker=stack.broker_url)
        topics = TopicSettings()
        influx_url = stack.influx_url

        warm, warm_points = sample_messages(1, 200, topics)
        asyncio.run(publish(warm, kafka))
        _wait_points(influx_url, "finsentry", warm_points, 300)

        bulk, bulk_points = sample_messages(2, n_items, topics)
        texts = scoring_texts(bulk, topics)
        # the model alone just before and just after the pipeline run: this box's speed drifts by 10 %+
        # within minutes, so one measurement on one side can tilt the ratio either way
        alone_before = model_alone(model_dir, variant, texts, batch_size, env or {})
        pids = {"worker": stack.worker.pid, "broker": stack.broker_pid, "influxdb": stack.influx_pid}
        cpu, start, published, end = run_backlog(kafka, topics, bulk, pids)
        _wait_points(influx_url, "finsentry", warm_points + bulk_points, 60)  # every point stored, too
        throughput = n_items / (end - start)

        rate = max(1.0, throughput * latency_load)
        paced, paced_points = sample_messages(3, latency_items, topics)
        sent_at: dict[str, int] = {}

        async def paced_publish() -> None:
            # publish one by one at `rate`, recording each message's publish time (ms)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
            await producer.start()
            try:
                pending = []
                for i, message in enumerate(paced):
                    delay = t0 + i / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    now_ms = int(time.time() * 1000)
                    sent_at[message.key.decode()] = now_ms
                    pending.append(await producer.send(message.topic, message.value, key=message.key,
                                                       timestamp_ms=now_ms))
                await asyncio.gather(*pending)
            finally:
                await producer.stop()

        asyncio.run(paced_publish())
        _wait_points(influx_url, "finsentry", warm_points + bulk_points + paced_points, 600)
        stored = asyncio.run(_score_timestamps(kafka, topics.scores, set(sent_at), 60))
        latencies = sorted(stored[i] - sent_at[i] for i in stored)

        def pct(p: float) -> float:
            return float(latencies[min(len(latencies) - 1, int(p * len(latencies)))]) if latencies else float("nan")

        log = stack.log_path.read_text(errors="replace")
        provider = "CPUExecutionProvider" if "on CPUExecutionProvider" in log else "see worker log"
        alone_after = model_alone(model_dir, variant, texts, batch_size, env or {})
        alone = {key: round((alone_before[key] + alone_after[key]) / 2, 3) for key in alone_before}
        return {
            "variant": variant, "batch_size": batch_size, "provider": provider, "env": env or {},
            "items": n_items, "points": bulk_points, "throughput_items_s": round(throughput, 1),
            "cpu_s_per_1000_items": cpu, "model_alone": alone,
            "model_alone_before_and_after": [alone_before, alone_after],
            "ratio_to_model_alone": round(throughput / alone["items_s"], 3),
            "worker_cpu_ms_per_item_outside_model": round(cpu["worker"] - alone["cpu_s_per_1000"], 3),
            "publish_items_s": round(n_items / (published - start), 1),
            "latency_rate_items_s": round(rate, 1), "latency_items": len(latencies),
            "latency_p50_ms": pct(0.50), "latency_p99_ms": pct(0.99), "latency_max_ms": latencies[-1] if latencies else None,
        }


def _commit(tree: Path) -> str:
    """The checked-out commit of a tree (``+`` if it has changes), for the result file."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


#: What a before/after run compares, pair by pair (key path in a result).
PAIRED = {"items/s": ("throughput_items_s",), "ratio to model alone": ("ratio_to_model_alone",),
          "worker CPU-ms/item outside model": ("worker_cpu_ms_per_item_outside_model",),
          "worker CPU-s/1000": ("cpu_s_per_1000_items", "worker"),
          "event-loop thread CPU-s/1000": ("cpu_s_per_1000_items", "worker_event_loop"),
          "p50 latency ms": ("latency_p50_ms",), "p99 latency ms": ("latency_p99_ms",)}


def _get(result: dict, path: tuple[str, ...]) -> float:
    for key in path:
        result = result[key]
    return float(result)


def compare(runs: list[dict]) -> dict:
    """Per measure: each round's after/before ratio, their median, and each side's median."""
    import statistics

    rounds = sorted({r["round"] for r in runs})
    side = {(r["round"], r["code"]): r for r in runs}
    out = {}
    for name, path in PAIRED.items():
        ratios = [_get(side[n, "after"], path) / _get(side[n, "before"], path) for n in rounds]
        out[name] = {"before_median": statistics.median(_get(side[n, "before"], path) for n in rounds),
                     "after_median": statistics.median(_get(side[n, "after"], path) for n in rounds),
                     "after_to_before": [round(x, 3) for x in ratios],
                     "median_after_to_before": round(statistics.median(ratios), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--variant", action="append", help="model variant(s); default int8")
    parser.add_argument("--batch-size", type=int, action="append", help="batch size(s); default 32")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--latency-load", type=float, default=0.5, help="fraction of throughput for latency run")
    parser.add_argument("--latency-items", type=int, default=600)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="worker setting for every case, e.g. FINSENTRY_RUNTIME__MAX_BATCH=16")
    parser.add_argument("--against", type=Path, help="another checkout: its worker and this one's, alternately")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each worker (alternating with --against)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline.json")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    trees = [("before", args.against.resolve()), ("after", None)] if args.against else [("this", None)]

    results = []
    for variant in args.variant or ["int8"]:
        for size in args.batch_size or [32]:
            for n in range(1, args.rounds + 1):
                for code, tree in trees:
                    print(f"running variant={variant} batch={size} round {n} {code} …", flush=True)
                    result = run_case(args.model_dir, variant, size, args.items, args.latency_load,
                                      args.latency_items, env, worker_root=tree)
                    results.append({"round": n, "code": code, "commit": _commit(tree or ROOT), **result})
                    print(json.dumps(results[-1]), flush=True)

    manifest = json.loads((args.model_dir / "manifest.json").read_text())
    report = {"command": " ".join(["bench/pipeline.py", *sys.argv[1:]]), "machine": machine(),
              "model": {"name": manifest["name"], "version": manifest["version"]}, "results": results}
    if args.against:
        report["paired"] = {f"{v}/{b}": compare([r for r in results if (r["variant"], r["batch_size"]) == (v, b)])
                            for v in args.variant or ["int8"] for b in args.batch_size or [32]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'code':6} {'variant':8} {'batch':>5} {'items/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'model/s':>8} "
          f"{'ratio':>6} {'CPU-s/1000: worker':>19} {'loop':>6} {'broker':>7} {'influx':>7} {'model':>6}"
          f"  (latency at {args.latency_load:.0%} load)")
    for r in results:
        c = r["cpu_s_per_1000_items"]
        print(f"{r['code']:6} {r['variant']:8} {r['batch_size']:>5} {r['throughput_items_s']:>8} "
              f"{r['latency_p50_ms']:>7.0f} {r['latency_p99_ms']:>7.0f} {r['model_alone']['items_s']:>8} "
              f"{r['ratio_to_model_alone']:>6} {c['worker']:>19} {c['worker_event_loop']:>6} {c['broker']:>7} "
              f"{c['influxdb']:>7} {r['model_alone']['cpu_s_per_1000']:>6}")
    for case, measures in report.get("paired", {}).items():
        print(f"\nafter/before, pair by pair ({case}):")
        for name, m in measures.items():
            print(f"  {name:34} median {m['median_after_to_before']:>6}   {m['after_to_before']}"
                  f"   (medians {m['before_median']} -> {m['after_median']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
