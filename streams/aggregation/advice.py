"""Risk-control suggestions attached to alerts, chosen by rule kind and severity.

A rule may override the text with its own ``suggestion`` (same placeholders,
see :data:`streams.aggregation.rules.SUGGESTION_FIELDS`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["suggestion"]

_TEMPLATES: dict[tuple[str, str], str] = {
    ("negative_spike", "critical"): (
        "Reduce or hedge exposure to {ticker} until the news is reviewed: {count} items in {window} average "
        "{mean:+.2f}, {negative_pct:.0f}% negative; news volume {ratio:.1f}x normal."),
    ("negative_spike", "warning"): (
        "Review exposure to {ticker}: {count} items in {window} average {mean:+.2f} "
        "({negative_pct:.0f}% negative). Read the cited headlines before adding risk."),
    ("shift_down", "critical"): (
        "Sentiment on {ticker} has broken down against its own normal (z {z:.1f}; {mean:+.2f} vs "
        "{baseline_mean:+.2f}). Tighten stops and review position limits now."),
    ("shift_down", "warning"): (
        "Sentiment on {ticker} is turning: {mean:+.2f} over {count} items in {window} vs a normal "
        "{baseline_mean:+.2f} (z {z:.1f}). Review open positions and stop levels."),
    ("volume_surge", "warning"): (
        "Unusual attention on {ticker}: {count} mentions in {window}, {ratio:.1f}x normal. Check for breaking "
        "news and expect wider spreads before trading."),
    ("volume_surge", "info"): (
        "More chatter than usual on {ticker} ({ratio:.1f}x normal volume, tone {mean:+.2f}). "
        "No action needed yet; watch for a direction."),
    ("positive_spike", "warning"): (
        "Strongly positive news flow on {ticker} ({count} items, mean {mean:+.2f}): review short exposure "
        "and squeeze risk."),
    ("positive_spike", "info"): (
        "Positive news flow on {ticker} ({count} items in {window}, mean {mean:+.2f}). Informational."),
    ("shift_up", "critical"): (
        "Sentiment on {ticker} jumped far above normal (z {z:.1f}): review short exposure and squeeze risk."),
    ("shift_up", "warning"): (
        "Sentiment on {ticker} is improving well beyond normal ({mean:+.2f} vs {baseline_mean:+.2f}, "
        "z {z:.1f}); review short exposure."),
}

_TEMPLATES.update({
    ("negative_surge", "critical"): (
        "Reduce or hedge exposure to {ticker} pending review: negative news volume {negative_ratio:.1f}x normal "
        "({count} items in {window}, mean {mean:+.2f})."),
    ("negative_surge", "warning"): (
        "Review exposure to {ticker}: negative news volume {negative_ratio:.1f}x normal ({count} items in {window}, "
        "{negative_pct:.0f}% negative). Read the cited headlines before adding risk."),
    ("positive_surge", "warning"): (
        "Positive news volume on {ticker} {positive_ratio:.1f}x normal: review short exposure and squeeze risk."),
    ("positive_surge", "info"): (
        "Positive news volume on {ticker} {positive_ratio:.1f}x normal ({count} items in {window}). Informational."),
})

_FALLBACK = "Review {ticker}: rule {rule} reached {severity} ({value:.2f} vs threshold {threshold:.2f})."


def suggestion(kind: str, severity: str, fields: dict[str, Any], override: str | None = None) -> str:
    """The advice line for an alert.

    >>> suggestion("volume_surge", "warning", {"ticker": "TSLA", "count": 30, "window": "5m", "ratio": 6.0})
    'Unusual attention on TSLA: 30 mentions in 5m, 6.0x normal. Check for breaking news and expect wider spreads before trading.'
    """
    template = override or _TEMPLATES.get((kind, severity)) or _TEMPLATES.get((kind, "warning")) or _FALLBACK
    return template.format(**fields)
