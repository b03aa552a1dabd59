"""Alert rules files: the shipped one loads, mistakes fail with a message that says where."""

from __future__ import annotations

import pytest

from streams.aggregation.rules import DEFAULT_RULES_FILE, RulesError, load_rules, parse_rules

GOOD = """
version: 1
rules:
  - id: neg
    kind: negative_spike
    window: 5m
    min_mentions: 5
    levels:
      - {severity: critical, threshold: -0.6, min_mentions: 10}
      - {severity: warning, threshold: -0.4}
    clear: -0.1
    cooldown: 15m
"""


def test_shipped_rules_load_and_watch_the_default_windows():
    rules = load_rules(windows=[60, 300, 3600])
    assert {r.kind for r in rules.active} >= {"negative_spike", "shift_down", "volume_surge", "negative_surge",
                                               "positive_surge"}
    assert [r.id for r in rules.rules if not r.enabled] == ["positive-spike"]  # off by default, see docs/alerts.md
    assert DEFAULT_RULES_FILE.exists()


def test_parsed_rule_levels_and_hysteresis():
    rule = parse_rules(GOOD, windows=[60, 300]).rules[0]
    assert rule.window == 300 and rule.cooldown == 900
    assert rule.level_for(-0.5, 6).severity == "warning"
    assert rule.level_for(-0.7, 6).severity == "warning"  # critical needs 10 mentions
    assert rule.level_for(-0.7, 10).severity == "critical"
    assert rule.level_for(-0.7, 4) is None  # too few mentions
    assert rule.level_for(-0.3, 20) is None
    assert not rule.recovered(-0.2, 8)  # between threshold and clear: still bad (hysteresis)
    assert rule.recovered(0.0, 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("kind: negative_spike", "kind: negative_spik"), "rule #1 ('neg'), kind: Input should be"),
        (("window: 5m", "window: 15m"), "rule 'neg' watches window 15m, but only 1m, 5m are aggregated"),
        (("clear: -0.1", "clear: -0.5"), "clear (-0.5) must be above the least severe threshold (-0.4)"),
        (("cooldown: 15m", "cooldown: soon"), "not a duration: 'soon'"),
        (("    clear: -0.1", "    clear: -0.1\n    suggestion: 'Sell {tickr}'"), "unknown or bad placeholder 'tickr'"),
        (("threshold: -0.6", "threshold: -0.2"), "level 'critical' must be at least as extreme as 'warning'"),
        (("    cooldown: 15m", "    cooldown: 15m\n    colour: red"), "colour: Extra inputs are not permitted"),
        (("version: 1", "version: 2"), "version: Input should be 1"),
    ],
)
def test_mistakes_name_the_rule_and_field(change, message):
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(RulesError) as err:
        parse_rules(text, "my-rules.yaml", windows=[60, 300])
    assert message in str(err.value)
    assert str(err.value).startswith("my-rules.yaml")


def test_duplicate_ids_bad_yaml_and_missing_file(tmp_path):
    twice = GOOD + GOOD.split("rules:\n", 1)[1]
    with pytest.raises(RulesError, match="duplicate rule ids: neg"):
        parse_rules(twice)
    with pytest.raises(RulesError, match="not valid YAML"):
        parse_rules("rules: [\n")
    with pytest.raises(RulesError, match="cannot read alert rules"):
        load_rules(tmp_path / "nope.yaml")
