"""The worker's Prometheus metrics: one definition of every product metric an operator scrapes.

Every stage increments these; the app serves them (with Faust's own monitor
metrics) at ``/metrics`` on the worker's web port. Names follow Prometheus
conventions: ``_total`` counters, ``_seconds`` histograms, base units.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["REGISTRY", "ITEMS", "DEAD_LETTERS", "BATCH_SIZE", "INFERENCE_SECONDS", "SINK_WRITE_SECONDS",
           "SINK_ERRORS", "SINK_RETRIES", "SINK_REJECTED", "DELIVERY_RETRIES", "ALERTS", "WEBHOOK", "MODEL", "MENTIONS",
           "LEDGER", "READY"]

#: A registry of its own (not the process-global default), so tests and several apps in one process
#: never collide; Faust's monitor metrics are registered in it too.
REGISTRY = CollectorRegistry(auto_describe=True)

ITEMS = Counter("finsentry_items", "Input messages by outcome: received, scored (stored in InfluxDB), "
                "dead_lettered", ["outcome", "topic"], registry=REGISTRY)
DEAD_LETTERS = Counter("finsentry_dead_letters", "Dead letters by the stage that refused the input",
                       ["stage"], registry=REGISTRY)
BATCH_SIZE = Histogram("finsentry_batch_size", "Messages per scoring micro-batch",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=REGISTRY)
INFERENCE_SECONDS = Histogram("finsentry_inference_seconds", "Model time per scoring micro-batch",
                              buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                              registry=REGISTRY)
SINK_WRITE_SECONDS = Histogram("finsentry_sink_write_seconds", "InfluxDB write until the server accepted it "
                               "(retries included)", ["stage"],
                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120),
                               registry=REGISTRY)
SINK_ERRORS = Counter("finsentry_sink_errors", "Failed InfluxDB writes by HTTP status (or 'connection')",
                      ["status"], registry=REGISTRY)
SINK_RETRIES = Counter("finsentry_sink_retries", "InfluxDB writes retried after a transient error",
                       registry=REGISTRY)
SINK_REJECTED = Counter("finsentry_sink_rejected_points", "Points InfluxDB refused for what they are",
                        registry=REGISTRY)
DELIVERY_RETRIES = Counter("finsentry_kafka_delivery_retries", "Output records re-sent after a broker error",
                           registry=REGISTRY)
MENTIONS = Counter("finsentry_mentions", "Mentions aggregated, by outcome: counted, duplicate, late",
                   ["outcome"], registry=REGISTRY)
ALERTS = Counter("finsentry_alerts", "Alert status changes emitted", ["status", "severity"], registry=REGISTRY)
WEBHOOK = Counter("finsentry_webhook_posts", "Webhook deliveries by result", ["result"], registry=REGISTRY)
LEDGER = Counter("finsentry_offset_ledger", "What the offset ledger prevented: stale records not delivered, "
                 "gap offsets refused, partitions re-sought", ["event"], registry=REGISTRY)
MODEL = Info("finsentry_model", "The model in use", registry=REGISTRY)
READY = Gauge("finsentry_ready", "1 when the worker scores (model loaded, tables recovered)", registry=REGISTRY)
