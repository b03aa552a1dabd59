"""The first stage: input bytes -> validated item -> model score -> InfluxDB point, Score and
one Mention per ticker (the ``score-items`` agent)."""
