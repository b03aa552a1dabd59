"""Memory over a long run: does the worker's RSS stay flat at a steady load?

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 250] [--tickers 2000] [--warm-up 16]
    .venv/bin/python bench/soak.py --summarise bench/results/soak.json   # re-read a saved run

Starts tansu + InfluxDB 1.x + one worker (aggregation and alert rules on, the
default int8 model), then publishes sample texts at ``--rate`` items/s for
``--minutes``, each item about 1–3 of ``--tickers`` synthetic symbols and
``published_at`` = now (so windows close and per-ticker state is exercised
for many tickers, not a handful). Every 15 s it samples the RSS of the worker,
the broker and InfluxDB from /proc. At the end it waits until every point is
stored (a soak that loses items is not a pass) and reports the worker's RSS
after the warm-up and its growth from the first minutes after the warm-up to
the last minutes of the run (see ``summarise``).
The warm-up must outlast the aggregation's dedup horizon (15 min of event
time, swept once a minute: each ticker remembers the ids it counted up to 16
min; the default warm-up is that), until which the
per-ticker state fills by design; after it, every per-ticker and per-id
structure is bounded, so RSS should be flat.

Prints a table and writes ``bench/results/soak.json``. Target (issue 15):
growth after warm-up < 10 %. tansu keeps every topic in memory, so the
broker's RSS grows with the data by design; it is reported, not judged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.contracts.settings import KafkaSettings, TopicSettings  # noqa: E402
from streams.tools import services  # noqa: E402
from streams.tools.publish import route  # noqa: E402
from streams.tools.samples import sample_items  # noqa: E402

from pipeline import _count, _wait_points, machine  # noqa: E402  (bench/pipeline.py)

#: Minutes at each end of the measured part of a run whose RSS samples are compared.
GROWTH_SPAN = 4.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def publish_steady(kafka: KafkaSettings, topics: TopicSettings, *, rate: float, seconds: float,
                         symbols: list[str], on_tick) -> int:
    """Publish at ``rate`` items/s for ``seconds``; returns the number of points expected."""
    from aiokafka import AIOKafkaProducer

    rng = random.Random(5)
    texts = list(sample_items(2000, seed=11))
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    loop = asyncio.get_running_loop()
    t0, sent, points, n = loop.time(), 0, 0, 0
    try:
        while (elapsed := loop.time() - t0) < seconds:
            due = int(elapsed * rate) - sent
            for _ in range(due):
                base = dict(texts[n % len(texts)])
                tickers = rng.sample(symbols, rng.choice((1, 1, 1, 2, 3)))
                item = {**base, "id": f"soak-{n}", "tickers": tickers,
                        "published_at": datetime.now(timezone.utc).isoformat()}
                message = route(json.dumps(item).encode(), topics)
                await producer.send(message.topic, message.value, key=message.key)
                points += len(tickers)
                n += 1
            sent += due
            on_tick(elapsed)
            await asyncio.sleep(0.1)
        await producer.flush()
    finally:
        await producer.stop()
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=250.0, help="items/s (≈ 50 %% of this box's throughput)")
    parser.add_argument("--tickers", type=int, default=2000)
    parser.add_argument("--warm-up", type=float, default=16.0, help="minutes before the baseline RSS is taken")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    parser.add_argument("--summarise", type=Path, metavar="RESULT_JSON",
                        help="recompute the summary of a saved run (its samples) into --out, without a new run")
    args = parser.parse_args()
    if args.summarise:
        result = json.loads(args.summarise.read_text())
        # runs saved before "warm_up_minutes" was recorded: read it from their command line, defaults included
        warm_up = result.get("warm_up_minutes") or parser.parse_args(result["command"].split()[1:]).warm_up
        samples = result.pop("samples")
        for key in ("worker_rss_mb", "worker_growth_after_warm_up", "growth_span_minutes"):
            result.pop(key, None)
        result = {**result, "warm_up_minutes": warm_up, **summarise(samples, warm_up), "samples": samples}
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        report(result, args.out)
        return

    symbols = [f"S{i:04d}" for i in range(args.tickers)]
    workdir = Path(tempfile.mkdtemp(prefix="finsentry-soak-"))
    samples: list[dict] = []
    with services.local_pipeline(args.model_dir, workdir) as stack:
        kafka, topics = KafkaSettings(broker=stack.broker_url), TopicSettings()
        pids = {"worker": stack.worker.pid, "broker": stack.broker_pid, "influxdb": stack.influx_pid}
        next_sample = [0.0]

        def on_tick(elapsed: float) -> None:
            if elapsed >= next_sample[0]:
                samples.append({"minute": round(elapsed / 60, 2),
                                **{name: round(rss_mb(pid), 1) for name, pid in pids.items()}})
                print(json.dumps(samples[-1]), flush=True)
                next_sample[0] += 15.0

        expected = asyncio.run(publish_steady(kafka, topics, rate=args.rate, seconds=args.minutes * 60,
                                              symbols=symbols, on_tick=on_tick))
        try:
            _wait_points(stack.influx_url, "finsentry", expected, 900)
        except TimeoutError as exc:
            print(f"NOT ALL STORED: {exc}", flush=True)
        stored = _count(stack.influx_url, "finsentry")
        samples.append({"minute": "end", **{name: round(rss_mb(pid), 1) for name, pid in pids.items()}})

    result = {
        "command": " ".join(["bench/soak.py", *sys.argv[1:]]),
        "machine": machine(),
        "minutes": args.minutes, "rate_items_s": args.rate, "tickers": args.tickers, "warm_up_minutes": args.warm_up,
        "expected_points": expected, "stored_points": stored,
        **summarise(samples, args.warm_up),
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    report(result, args.out)


def summarise(samples: list[dict], warm_up: float, span: float = GROWTH_SPAN) -> dict:
    """The worker's RSS after ``warm_up`` minutes and its growth, from the 15-s samples.

    Growth compares the first ``span`` minutes after the warm-up with the last ``span`` minutes of the
    run, like with like: their medians (the level) and their maxima (the peaks). The worker's RSS is not
    a line: in the run on 6b61b26 it jumped ~30 MB for under 15 s once a minute, at the same second of
    every minute. Two things happen once a minute for all tickers at nearly the same moment: their
    1-minute windows close (windows are aligned to the minute) and their ids are swept; which one it is
    was not measured. (On fa9539b, where unchanged windows keep their encoded state, the burst is gone.)
    The first version of this bench compared the largest sample after the warm-up
    with the one sample at its end, so such a burst against a quiet sample read as growth; that ratio
    is still reported, as ``peak_vs_warm_up_sample``.
    """
    timed = [s for s in samples if s["minute"] != "end"]
    after = [s for s in timed if s["minute"] >= warm_up]
    if not after:
        return {"worker_rss_mb": None, "growth_span_minutes": span, "worker_growth_after_warm_up": None}
    end = timed[-1]["minute"]
    first = [s["worker"] for s in after if s["minute"] < warm_up + span]
    last = [s["worker"] for s in after if s["minute"] > end - span]
    rss = {"start": samples[0]["worker"], "after_warm_up": after[0]["worker"],
           "peak_after_warm_up": max(s["worker"] for s in after), "end": samples[-1]["worker"],
           "first_span_median": round(statistics.median(first), 1),
           "last_span_median": round(statistics.median(last), 1),
           "first_span_peak": max(first), "last_span_peak": max(last)}
    return {
        "worker_rss_mb": rss, "growth_span_minutes": span,
        "worker_growth_after_warm_up": {
            "median_to_median": round(rss["last_span_median"] / rss["first_span_median"] - 1, 4),
            "peak_to_peak": round(rss["last_span_peak"] / rss["first_span_peak"] - 1, 4),
            "peak_vs_warm_up_sample": round(rss["peak_after_warm_up"] / rss["after_warm_up"] - 1, 4),
        },
    }


def report(result: dict, out: Path) -> None:
    r, g = result["worker_rss_mb"], result["worker_growth_after_warm_up"]
    span = result["growth_span_minutes"]
    if r is None:
        print(f"\nno sample after the {result['warm_up_minutes']:g}-minute warm-up: run longer than it\nwrote {out}")
        return
    print(f"\nworker RSS MB: start {r['start']}, after {result['warm_up_minutes']:g} min warm-up {r['after_warm_up']}, "
          f"end {r['end']}\nfirst {span:g} min after warm-up: median {r['first_span_median']}, peak "
          f"{r['first_span_peak']}; last {span:g} min: median {r['last_span_median']}, peak {r['last_span_peak']}\n"
          f"growth: median to median {g['median_to_median']:.1%}, peak to peak {g['peak_to_peak']:.1%} "
          f"(target < 10 %); largest sample vs the warm-up sample {g['peak_vs_warm_up_sample']:.1%}\n"
          f"points stored {result['stored_points']} of {result['expected_points']}; broker RSS "
          f"{result['samples'][-1]['broker']} MB (tansu keeps everything in memory)\nwrote {out}")


if __name__ == "__main__":
    main()
