"""Alert detection quality on generated streams with known events.

    .venv/bin/python bench/detection.py                       # the shipped models/default, default rules
    .venv/bin/python bench/detection.py --model-dir M --rules R --out reports/detection

Scores every text of the held-out corpus test split once with the exported
model (the worker's own ``load_model``), then runs the worker's aggregation
engine (:class:`streams.aggregation.engine.Aggregator`) over generated streams in arrival
order: ``--event-streams`` days with injected events and ``--quiet-streams``
days without any. Reports, for the default rules and for one-rule sweeps:

* event recall (an event counts as detected when an alert of a fitting kind
  fires for its ticker between its start and 15 minutes after its end),
* precision (firing alerts that belong to an event / all firing alerts),
* median and p90 detection delay (first fitting alert minus event start),
* false alerts per ticker-day on the quiet streams.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.aggregation.engine import Aggregator, EngineConfig  # noqa: E402
from streams.tools.generator import StreamSpec, TextPool, generate, random_spec  # noqa: E402
from streams.contracts.records import Mention  # noqa: E402
from streams.aggregation.rules import RuleSet, load_rules  # noqa: E402

GRACE = timedelta(minutes=15)
FITTING = {
    "burst": {"negative_spike", "shift_down", "volume_surge", "negative_surge"},
    "drift": {"negative_spike", "shift_down", "negative_surge"},
    "surge": {"volume_surge", "negative_spike", "shift_down", "positive_spike", "shift_up", "negative_surge",
              "positive_surge"},
    "positive_burst": {"positive_spike", "shift_up", "volume_surge", "positive_surge"},
}


def scored_pool(model_dir: Path, pool: TextPool) -> dict[str, tuple[float, str]]:
    from streams.runtime import load_model

    model = load_model(model_dir)
    texts = sorted({t for rows in pool.texts.values() for t, _ in rows})
    preds = model.predict(texts)
    print(f"scored {len(texts)} pool texts with {model.name} {model.version} ({model.variant}, {model.provider})")
    return {t: (p.score, p.label) for t, p in zip(texts, preds)}


def mentions(spec: StreamSpec, pool: TextPool, scores: dict[str, tuple[float, str]]) -> list[Mention]:
    out = []
    for item in generate(spec, pool):
        text = item.get("headline") or item.get("text")
        score, label = scores[text]
        out.append(Mention(id=item["id"], ticker=item["tickers"][0], score=score, label=label, source=item["source"],
                           published_at=datetime.fromisoformat(item["published_at"].replace("Z", "+00:00")),
                           headline=text))
    return out


def run(rules: RuleSet, config: EngineConfig, stream: list[Mention]) -> list:
    store: dict = {}
    engine = Aggregator(rules, config, store)
    alerts = []
    for m in stream:
        effects = engine.observe(m, 0)
        effects.apply(store)
        alerts.extend(a for a in effects.alerts if a.status == "firing")
    return alerts


TARGETS = {
    "negative_spike": {"burst", "drift"}, "shift_down": {"burst", "drift"}, "negative_surge": {"burst", "drift"},
    "volume_surge": {"surge", "burst", "positive_burst"}, "positive_spike": {"positive_burst"},
    "shift_up": {"positive_burst"}, "positive_surge": {"positive_burst"},
}


def evaluate(rules: RuleSet, config: EngineConfig, event_streams, quiet_streams) -> dict:
    detected: dict[str, list] = {k: [] for k in FITTING}
    delays: dict[str, list[float]] = {k: [] for k in FITTING}
    true_alerts = false_alerts = 0
    for spec, stream in event_streams:
        alerts = run(rules, config, stream)
        used = set()
        for ev in spec.events:
            hits = [a for a in alerts if a.ticker == ev.ticker and a.kind in FITTING[ev.kind]
                    and ev.start <= a.event_time <= ev.end + GRACE]
            detected[ev.kind].append(bool(hits))
            if hits:
                delays[ev.kind].append((min(a.event_time for a in hits) - ev.start).total_seconds())
            used.update(a.dedup_key for a in alerts if a.ticker == ev.ticker
                        and ev.start <= a.event_time <= ev.end + GRACE)
        true_alerts += sum(a.dedup_key in used for a in alerts)
        false_alerts += sum(a.dedup_key not in used for a in alerts)
    quiet_alerts = 0
    ticker_days = 0.0
    for spec, stream in quiet_streams:
        quiet_alerts += len(run(rules, config, stream))
        ticker_days += len(spec.tickers) * spec.duration_s / 86400
    targeted = set().union(*(TARGETS[r.kind] for r in rules.active))
    detected = {k: v for k, v in detected.items() if k in targeted}
    delays = {k: v for k, v in delays.items() if k in targeted}
    all_delays = [d for v in delays.values() for d in v]
    n_events = sum(len(v) for v in detected.values())
    return {
        "events": n_events,
        "recall": sum(sum(v) for v in detected.values()) / max(n_events, 1),
        "targets": sorted(targeted),
        "recall_by_kind": {k: (sum(v) / len(v) if v else None) for k, v in detected.items()},
        "events_by_kind": {k: len(v) for k, v in detected.items()},
        "precision": true_alerts / max(true_alerts + false_alerts, 1),
        "alerts_on_event_streams": true_alerts + false_alerts,
        "median_delay_s": statistics.median(all_delays) if all_delays else None,
        "p90_delay_s": statistics.quantiles(all_delays, n=10)[-1] if len(all_delays) >= 2 else None,
        "median_delay_by_kind_s": {k: (statistics.median(v) if v else None) for k, v in delays.items()},
        "false_alerts_per_ticker_day": quiet_alerts / max(ticker_days, 1e-9),
        "quiet_alerts": quiet_alerts,
        "quiet_ticker_days": ticker_days,
    }


def only(rules: RuleSet, rule_id: str, **changes) -> RuleSet:
    """The rule set with just one rule enabled, with ``changes`` applied to it."""
    out = []
    for r in rules.rules:
        if r.id == rule_id:
            data = r.model_dump()
            levels = data["levels"]
            if "threshold" in changes:  # move the least severe level; keep stricter ones at least as strict
                levels[-1]["threshold"] = changes.pop("threshold")
                below = r.spec.direction == "below"
                for lv in levels[:-1]:
                    lv["threshold"] = min(lv["threshold"], levels[-1]["threshold"]) if below else \
                        max(lv["threshold"], levels[-1]["threshold"])
            data.update(changes)
            data["clear"] = None
            data["enabled"] = True  # also sweeps a rule the shipped file disables
            out.append(type(r).model_validate(data))
        else:
            out.append(r.model_copy(update={"enabled": False}))
    return RuleSet(version=1, rules=out)


SWEEPS = {
    "negative-surge": [dict(threshold=4.0, min_mentions=6), dict(threshold=5.0, min_mentions=5),
                       dict(threshold=8.0, min_mentions=5)],
    "negative-spike": [dict(threshold=-0.4, min_mentions=8), dict(threshold=-0.5, min_mentions=8),
                       dict(threshold=-0.4, min_mentions=12)],
    "sentiment-shift-down": [dict(threshold=-3.0), dict(threshold=-2.5)],
    "sentiment-drift-down": [dict(threshold=-3.0, min_mentions=8), dict(threshold=-2.5, min_mentions=20),
                             dict(threshold=-3.0, min_mentions=20)],
    "volume-surge": [dict(threshold=4.0, min_mentions=12), dict(threshold=6.0, min_mentions=8),
                     dict(threshold=8.0, min_mentions=12)],
    "positive-surge": [dict(threshold=4.0, min_mentions=6), dict(threshold=6.0, min_mentions=5)],
    "positive-spike": [dict(threshold=0.5, min_mentions=12), dict(threshold=0.4, min_mentions=8)],

}


def fmt(v, pct=False, digits=2):
    if v is None:
        return "–"
    return f"{100 * v:.0f} %" if pct else f"{v:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--rules", type=Path, default=None)
    ap.add_argument("--event-streams", type=int, default=6)
    ap.add_argument("--quiet-streams", type=int, default=4)
    ap.add_argument("--events", type=int, default=10, help="events per event stream")
    ap.add_argument("--tickers", type=int, default=30)
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--sweep", action="append", default=None, help="sweep only these rule ids")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "detection")
    args = ap.parse_args()

    started = time.perf_counter()
    rules = load_rules(args.rules)
    config = EngineConfig()
    pool = TextPool.from_corpus()
    scores = scored_pool(args.model_dir, pool)
    event_streams, quiet_streams = [], []
    for i in range(args.event_streams):
        spec = random_spec(100 + i, tickers=args.tickers, events=args.events)
        event_streams.append((spec, mentions(spec, pool, scores)))
    for i in range(args.quiet_streams):
        spec = random_spec(200 + i, tickers=args.tickers, events=0)
        quiet_streams.append((spec, mentions(spec, pool, scores)))
    n_items = sum(len(s) for _, s in event_streams + quiet_streams)
    print(f"{len(event_streams)} event days, {len(quiet_streams)} quiet days, {args.tickers} tickers each, "
          f"{n_items} mentions")

    results = {"default": evaluate(rules, config, event_streams, quiet_streams)}
    sweeps: dict[str, list] = {}
    if not args.no_sweep:
        for rule_id, variants in SWEEPS.items():
            if rule_id not in {r.id for r in rules.rules} or (args.sweep and rule_id not in args.sweep):
                continue
            sweeps[rule_id] = []
            current = next(r for r in rules.rules if r.id == rule_id)
            for change in [dict(threshold=current.levels[-1].threshold, min_mentions=current.min_mentions)] + variants:
                res = evaluate(only(rules, rule_id, **dict(change)), config, event_streams, quiet_streams)
                sweeps[rule_id].append({"change": change, **res})
                print(f"{rule_id} {change}: recall {fmt(res['recall'], True)} precision {fmt(res['precision'], True)} "
                      f"delay {fmt(res['median_delay_s'], digits=0)} s, quiet {res['false_alerts_per_ticker_day']:.3f}"
                      "/ticker-day")

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"model_dir": str(args.model_dir), "rules": str(args.rules or "streams/aggregation/alert_rules.yaml"),
            "event_streams": len(event_streams), "quiet_streams": len(quiet_streams), "tickers": args.tickers,
            "mentions": n_items, "seconds": round(time.perf_counter() - started, 1), "config": config.__dict__}
    (args.out / "detection.json").write_text(json.dumps({"meta": meta, "results": results, "sweeps": sweeps},
                                                        indent=2, default=str) + "\n")
    d = results["default"]
    lines = [
        "# Alert detection on generated streams", "",
        f"Command: `.venv/bin/python bench/detection.py` ({meta['seconds']} s). Model `{args.model_dir.name}`; "
        f"{len(event_streams)} generated days with {d['events']} injected events and {len(quiet_streams)} quiet days, "
        f"{args.tickers} tickers per day, {n_items} mentions in all. Texts: held-out corpus test split.", "",
        "## Default rules (streams/aggregation/alert_rules.yaml)", "",
        "| | value |", "|---|---|",
        f"| event recall | {fmt(d['recall'], True)} ({d['events']} events) |",
        f"| precision (firing alerts that belong to an event) | {fmt(d['precision'], True)} "
        f"({d['alerts_on_event_streams']} alerts) |",
        f"| median / p90 detection delay | {fmt(d['median_delay_s'], digits=0)} s / {fmt(d['p90_delay_s'], digits=0)} s |",
        f"| false alerts per ticker-day (quiet days) | {d['false_alerts_per_ticker_day']:.3f} "
        f"({d['quiet_alerts']} in {d['quiet_ticker_days']:.0f} ticker-days) |", "",
        "| event kind | events | recall | median delay |", "|---|---|---|---|",
    ]
    for kind in d["events_by_kind"]:
        lines.append(f"| {kind} | {d['events_by_kind'][kind]} | {fmt(d['recall_by_kind'][kind], True)} | "
                     f"{fmt(d['median_delay_by_kind_s'][kind], digits=0)} s |")
    for rule_id, rows in sweeps.items():
        lines += ["", f"## Sweep: `{rule_id}` alone (first row = the shipped setting)", "",
                  "| change | recall (targeted kinds) | precision | median delay | false / ticker-day |",
                  "|---|---|---|---|---|"]
        for row in rows:
            lines.append(f"| {row['change']} | {fmt(row['recall'], True)} ({', '.join(row['targets'])}) | "
                         f"{fmt(row['precision'], True)} | "
                         f"{fmt(row['median_delay_s'], digits=0)} s | {row['false_alerts_per_ticker_day']:.3f} |")
    (args.out / "detection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
