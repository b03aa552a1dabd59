"""Alerts to a Slack-compatible webhook, from the alerts topic.

A separate agent reads the alerts topic, so a slow or failing webhook delays
only other webhook posts, never scoring or aggregation. Each alert is retried
with exponential backoff (network errors, 429, 5xx); after
``webhook_max_attempts`` it goes to the dead-letter topic with the reason, and
so does an alert the endpoint refuses outright (other 4xx). The URL is a
secret: it is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiohttp
import faust

from streams.contracts import metrics
from streams.contracts.records import Alert, DeadLetter
from streams.contracts.settings import AlertSettings
from streams.kafka.delivery import deliver

__all__ = ["slack_payload", "Delivery", "Webhook", "attach_webhook"]

log = logging.getLogger(__name__)

_ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook JSON: ``text`` for any client, blocks for Slack."""
    icon = ":white_check_mark:" if alert.status == "resolved" else _ICONS.get(alert.severity, "")
    head = f"{icon} *{alert.ticker}* {alert.rule} {alert.status} ({alert.severity}, {alert.window} window)"
    numbers = (f"{alert.count} items, mean {alert.mean_score:+.2f}, {100 * alert.negative_share:.0f}% negative, "
               f"z {alert.z_score:.1f}, volume {alert.volume_ratio:.1f}x normal (baseline {alert.baseline_mean:+.2f})")
    evidence = "\n".join(f"• {t.headline} ({t.score:+.2f}, id {t.id})" for t in alert.top_items)
    text = f"{head}\n{alert.suggestion}\n{numbers}" + (f"\n{evidence}" if evidence else "")
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{head}\n{alert.suggestion}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{numbers} · key `{alert.dedup_key}`"}]},
            *([{"type": "section", "text": {"type": "mrkdwn", "text": evidence}}] if evidence else []),
        ],
    }


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    reason: str = ""


class Webhook:
    """POST alerts with retries; :meth:`deliver` never raises for HTTP trouble."""

    def __init__(self, settings: AlertSettings) -> None:
        if settings.webhook_url is None:
            raise ValueError("no webhook URL configured")
        self._url = settings.webhook_url.get_secret_value()
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, alert: Alert) -> Delivery:
        assert self._session is not None, "start() first"
        s = self.settings
        delay = s.webhook_retry_initial
        reason = ""
        for attempt in range(1, s.webhook_max_attempts + 1):
            try:
                async with self._session.post(self._url, json=slack_payload(alert)) as resp:
                    body = (await resp.text())[:200]
                    if 200 <= resp.status < 300:
                        return Delivery(True, attempt)
                    reason = f"HTTP {resp.status}: {body}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 425, 429):
                        return Delivery(False, attempt, f"webhook refused the alert: {reason}")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}".replace(self._url, "<webhook>")
            if attempt < s.webhook_max_attempts:
                wait = min(delay, s.webhook_retry_max) * random.uniform(0.8, 1.2)
                log.warning("webhook post of %s failed (attempt %d/%d, %s); retrying in %.1fs",
                            alert.dedup_key, attempt, s.webhook_max_attempts, reason, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, s.webhook_retry_max)
        return Delivery(False, s.webhook_max_attempts, f"gave up after {s.webhook_max_attempts} attempts: {reason}")


def attach_webhook(app: faust.App, settings: Any, alerts_topic: Any, dead_topic: Any) -> Webhook:
    """Add the ``notify-webhook`` agent (only when a webhook URL is configured)."""
    hook = Webhook(settings.alerts)

    @app.agent(alerts_topic, name="notify-webhook")
    async def notify_webhook(stream: faust.StreamT) -> None:
        await hook.start()
        try:
            async for event in stream.events():
                alert: Alert = event.value
                result = await hook.deliver(alert)
                if result.delivered:
                    metrics.WEBHOOK.labels(result="delivered").inc()
                    log.info("webhook: %s %s delivered (attempt %d)", alert.status, alert.dedup_key, result.attempts)
                    continue
                log.error("webhook: %s not delivered: %s; sent to the dead-letter topic", alert.dedup_key,
                          result.reason)
                msg = event.message
                letter = DeadLetter.of(
                    stage="notify", reason=result.reason, topic=msg.topic, partition=msg.partition,
                    offset=msg.offset, key=msg.key, value=alert.dumps(), failed_at=datetime.now(timezone.utc),
                    item_id=alert.dedup_key,
                )
                await deliver([(dead_topic, alert.dedup_key.encode(), letter)], "webhook dead letter")
                metrics.WEBHOOK.labels(result="dead_lettered").inc()
                metrics.DEAD_LETTERS.labels(stage="notify").inc()
        finally:
            await hook.stop()

    return hook
