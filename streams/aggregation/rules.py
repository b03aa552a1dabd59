"""Alert rules: a YAML file the user edits, validated on load.

Each rule watches one signal of one window size for every ticker::

    version: 1
    rules:
      - id: negative-spike
        kind: negative_spike       # what is measured, see KINDS
        window: 5m                  # one of the aggregation windows
        min_mentions: 6
        levels:                     # first matching from the most severe down
          - {severity: critical, threshold: -0.6, min_mentions: 10}
          - {severity: warning, threshold: -0.35}
        clear: -0.15                # hysteresis: recovered only above this
        cooldown: 30m

``load_rules`` raises :class:`RulesError` naming the file, the rule and the
field for any mistake (unknown kind, a window that is not aggregated, a clear
level on the wrong side of the threshold, an unknown placeholder in a
suggestion), so a bad edit fails at start-up, not at the first alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streams.aggregation.windows import window_label
from streams.contracts.settings import parse_duration

__all__ = ["KINDS", "Kind", "Level", "Rule", "RuleSet", "RulesError", "load_rules", "parse_rules",
           "DEFAULT_RULES_FILE", "SUGGESTION_FIELDS", "SEVERITY_RANK", "polarity_of"]

DEFAULT_RULES_FILE = Path(__file__).with_name("alert_rules.yaml")

Kind = Literal["negative_spike", "positive_spike", "shift_down", "shift_up", "volume_surge", "negative_surge",
               "positive_surge"]


@dataclass(frozen=True)
class KindSpec:
    signal: str  # mean_score | z_score | volume_ratio
    direction: Literal["below", "above"]
    meaning: str
    uses_baseline: bool
    polarity: Literal["negative", "positive", "volume"]  # which incident of a ticker the rule joins


KINDS: dict[str, KindSpec] = {
    "negative_spike": KindSpec("mean_score", "below", "window mean score below the threshold", False, "negative"),
    "positive_spike": KindSpec("mean_score", "above", "window mean score above the threshold", False, "positive"),
    "shift_down": KindSpec("z_score", "below", "z-score against the ticker's own baseline below the threshold", True,
                           "negative"),
    "shift_up": KindSpec("z_score", "above", "z-score against the ticker's own baseline above the threshold", True,
                         "positive"),
    "volume_surge": KindSpec("volume_ratio", "above", "mentions over the ticker's normal count above the threshold",
                             True, "volume"),
    "negative_surge": KindSpec("negative_ratio", "above",
                               "negative items over the ticker's normal number of negative items above the threshold",
                               True, "negative"),
    "positive_surge": KindSpec("positive_ratio", "above",
                               "positive items over the ticker's normal number of positive items above the threshold",
                               True, "positive"),
}


def polarity_of(kind: str) -> str:
    """``negative``, ``positive`` or ``volume``: the one polarity table (engine, backtest).

    >>> polarity_of("shift_down"), polarity_of("volume_surge")
    ('negative', 'volume')
    """
    return KINDS[kind].polarity

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

#: Placeholders a ``suggestion`` may use (checked on load).
SUGGESTION_FIELDS = {
    "ticker": "AAPL", "window": "5m", "count": 12, "mean": -0.5, "negative_pct": 75.0, "positive_pct": 5.0,
    "z": -4.2, "ratio": 6.0, "negative_ratio": 6.0, "positive_ratio": 1.0, "baseline_mean": 0.05, "baseline_rate": 2.0, "severity": "warning",
    "rule": "negative-spike", "value": -0.5, "threshold": -0.35,
}


class RulesError(ValueError):
    """The rules file is missing or wrong; the message says where and why."""


class Level(BaseModel):
    model_config = ConfigDict(extra="forbid")

    severity: Severity
    threshold: float
    min_mentions: int | None = Field(None, ge=1)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    kind: Kind
    window: int
    min_mentions: int = Field(5, ge=1)
    levels: list[Level] = Field(min_length=1)
    clear: float | None = None
    cooldown: int = 1800
    clear_windows: int = Field(1, ge=1, description="consecutive recovered windows before the alert resolves")
    min_baseline_windows: float = Field(30, ge=0, description="baseline rules wait for this much history")
    description: str = ""
    suggestion: str | None = None
    enabled: bool = True

    @field_validator("window", "cooldown", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> "Rule":
        spec = KINDS[self.kind]
        below = spec.direction == "below"
        ordered = sorted(self.levels, key=lambda lv: SEVERITY_RANK[lv.severity], reverse=True)
        if [lv.severity for lv in ordered] != [lv.severity for lv in self.levels]:
            raise ValueError("levels must be listed from the most severe down")
        if len({lv.severity for lv in self.levels}) != len(self.levels):
            raise ValueError("each severity may appear once in levels")
        for stricter, looser in zip(self.levels, self.levels[1:]):
            if (stricter.threshold > looser.threshold) if below else (stricter.threshold < looser.threshold):
                raise ValueError(f"level {stricter.severity!r} must be at least as extreme as {looser.severity!r}")
        loosest = self.levels[-1].threshold
        if self.clear is None:
            self.clear = loosest
        elif (self.clear < loosest) if below else (self.clear > loosest):
            side = "above" if below else "below"
            raise ValueError(f"clear ({self.clear}) must be {side} the least severe threshold ({loosest}) "
                             f"for hysteresis: a {self.kind} alert clears when the signal is back {side} it")
        if spec.signal.endswith("_ratio") and loosest <= 1:
            raise ValueError(f"a {self.kind} threshold is a ratio to the normal count and must be > 1")
        if self.suggestion is not None:
            try:
                self.suggestion.format(**SUGGESTION_FIELDS)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"suggestion has an unknown or bad placeholder {exc}; "
                                 f"known: {', '.join(sorted(SUGGESTION_FIELDS))}") from None
        return self

    @property
    def spec(self) -> KindSpec:
        return KINDS[self.kind]

    def counted(self, count: int, negative: int, positive: int) -> int:
        """The mentions ``min_mentions`` applies to: negative/positive items for the surge kinds."""
        return {"negative_surge": negative, "positive_surge": positive}.get(self.kind, count)

    def level_for(self, value: float, count: int) -> Level | None:
        """The most severe level the value reaches with enough mentions."""
        if count < self.min_mentions:
            return None
        below = self.spec.direction == "below"
        for level in self.levels:
            if count < (level.min_mentions or self.min_mentions):
                continue
            if (value <= level.threshold) if below else (value >= level.threshold):
                return level
        return None

    def recovered(self, value: float, count: int) -> bool:
        """Hysteresis: back beyond the clear level, or too few mentions to say anything."""
        if count < self.min_mentions:
            return True
        assert self.clear is not None
        return value > self.clear if self.spec.direction == "below" else value < self.clear


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique(self) -> "RuleSet":
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule ids: {', '.join(dupes)}")
        return self

    @property
    def active(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled]

    def check_windows(self, windows: list[int], source: str = "rules") -> None:
        """Every rule must watch a window size the aggregator keeps."""
        for rule in self.active:
            if rule.window not in windows:
                raise RulesError(f"{source}: rule {rule.id!r} watches window {window_label(rule.window)}, but only "
                                 f"{', '.join(window_label(w) for w in windows)} are aggregated "
                                 f"(FINSENTRY_ALERTS__WINDOWS)")


def _describe(error: ValidationError, data: Any) -> str:
    parts = []
    for err in error.errors():
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = data.get("rules") if isinstance(data, dict) else None
            rid = rules[loc[1]].get("id") if isinstance(rules, list) and isinstance(rules[loc[1]], dict) else None
            where = f"rule #{loc[1] + 1}" + (f" ({rid!r})" if rid else "")
            loc = loc[2:]
        field = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(", ".join(p for p in (where, field) if p) + f": {msg}" if (where or field) else msg)
    return "; ".join(parts)


def parse_rules(text: str, source: str = "<rules>", windows: list[int] | None = None) -> RuleSet:
    """Parse and validate rules YAML (``windows``: the aggregated sizes to check against)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RulesError(f"{source}: expected a mapping with 'version' and 'rules'")
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        raise RulesError(f"{source}: {_describe(exc, data)}") from None
    if windows is not None:
        ruleset.check_windows(windows, source)
    return ruleset


def load_rules(path: Path | None = None, windows: list[int] | None = None) -> RuleSet:
    """Read a rules file (default: the shipped ``streams/aggregation/alert_rules.yaml``)."""
    path = Path(path or DEFAULT_RULES_FILE)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(f"cannot read alert rules {path}: {exc.strerror}") from None
    return parse_rules(text, str(path), windows)
