"""finsentry's serving side: Kafka in, scores out, one package per stage.

Imports point one way (``tests/test_layout.py`` enforces it)::

    contracts  <-  runtime, kafka, influx  <-  scoring, aggregation, notify  <-  app  <-  cli, tools

* ``contracts``   records on the topics, the input schema, labels, settings;
* ``runtime``     model directory contract + ONNX Runtime (imports nothing else of the project);
* ``kafka``       security config, the safe-commit consumer, delivery, topics, changelog markers;
* ``influx``      points (series identity) and sinks;
* ``scoring``     first agent: bytes -> Score -> Mention, ticker extraction;
* ``aggregation`` second agent: windows, state, rules, incidents, advice -> Alert;
* ``notify``      third agent: alerts -> webhook;
* ``app``         wires the stages into one Faust app; ``cli`` mounts the commands;
* ``tools``       publish, replay, backtest, generator, samples, demo, local services: never imported by the worker.
"""
