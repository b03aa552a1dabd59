"""Offline and operator tools: publish, replay, backtest, stream generator, samples, demo, local
services. Each mounts its own ``finsentry`` command; the worker never imports this package."""
