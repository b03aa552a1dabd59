"""Both InfluxDB transports against real servers: writes land, rejections surface."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from pydantic import SecretStr

from streams.tools import services
from streams.contracts.settings import InfluxApi, InfluxSettings
from streams.influx.sink import InfluxV1Sink, InfluxV2Sink, LineProtocolFileSink

pytestmark = pytest.mark.integration


def _q(url: str, db: str, q: str) -> list:
    params = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"})
    body = json.loads(urllib.request.urlopen(f"{url}/query?{params}").read())
    series = body["results"][0].get("series", [])
    return [dict(zip(s["columns"], v)) for s in series for v in s["values"]]


async def _write(sink, lines):
    await sink.start()
    try:
        return await sink.write(lines)
    finally:
        await sink.stop()


def test_v1_write_lands(influxd):
    db = f"v1_{uuid.uuid4().hex[:6]}"
    sink = InfluxV1Sink(InfluxSettings(api=InfluxApi.v1, url=influxd.url, bucket=db))
    rejected = asyncio.run(_write(sink, ["sentiment,ticker=AAPL score=0.5 1772460000000000001",
                                         "sentiment,ticker=MSFT score=-0.5 1772460000000000002"]))
    assert rejected == []
    rows = _q(influxd.url, db, "SELECT * FROM sentiment")
    assert [(r["ticker"], r["score"], r["time"]) for r in rows] == [
        ("AAPL", 0.5, 1772460000000000001), ("MSFT", -0.5, 1772460000000000002)]
    assert sink.stats.points == 2


def test_v1_field_type_conflict_is_reported_and_isolated(influxd, caplog):
    db = f"v1_{uuid.uuid4().hex[:6]}"
    sink = InfluxV1Sink(InfluxSettings(api=InfluxApi.v1, url=influxd.url, bucket=db))
    asyncio.run(_write(InfluxV1Sink(sink.settings), ['sentiment,ticker=X score="text" 1']))
    # `score` already exists as a string field: the integer in the middle conflicts
    lines = ['sentiment,ticker=AAPL score="ok" 1772460000000000001',
             "sentiment,ticker=BAD score=1i 1772460000000000002",
             'sentiment,ticker=MSFT score="fine" 1772460000000000003']
    with caplog.at_level(logging.WARNING):
        rejected = asyncio.run(_write(sink, lines))
    assert [r.index for r in rejected] == [1]
    assert "field type conflict" in rejected[0].reason and "HTTP 400" in rejected[0].reason
    assert sink.stats.rejected_points == 1 and sink.stats.errors_by_status["400"] >= 1
    assert "field type conflict" in caplog.text
    assert {r["ticker"] for r in _q(influxd.url, db, "SELECT * FROM sentiment")} == {"X", "AAPL", "MSFT"}


def test_v1_unreachable_server_is_retried_until_it_comes_up(tmp_path):
    port = services.free_port()
    settings = InfluxSettings(api=InfluxApi.v1, url=f"http://127.0.0.1:{port}", bucket="late",
                              retry_initial=0.1, retry_max=0.5, create_database=False)
    sink = InfluxV1Sink(settings)

    async def scenario():
        await sink.start()
        task = asyncio.create_task(sink.write(["sentiment,ticker=AAPL score=1 1"]))
        await asyncio.sleep(1.5)
        assert not task.done()  # not acknowledged while the server is down
        assert sink.stats.retries >= 2 and "cannot reach" in sink.stats.last_error
        server = await asyncio.to_thread(services.start_influxd, port=port)
        try:
            urllib.request.urlopen(urllib.request.Request(f"{server.url}/query", data=b"q=CREATE DATABASE late"))
            assert await asyncio.wait_for(task, 60) == []
            return _q(server.url, "late", "SELECT * FROM sentiment")
        finally:
            await sink.stop()
            server.stop()

    rows = asyncio.run(scenario())
    assert len(rows) == 1 and rows[0]["score"] == 1


def _vm_export(url: str, auth: tuple[str, str] | None = None) -> list[dict]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        urllib.request.urlopen(f"{url}/internal/force_flush").read()
        q = urllib.parse.urlencode({"match[]": '{__name__=~"sentiment_.*"}'})
        out = [json.loads(line) for line in urllib.request.urlopen(f"{url}/api/v1/export?{q}").read().splitlines()]
        if out:
            return out
        time.sleep(0.3)
    return []


def test_v2_client_write_lands_on_a_v2_endpoint(victoria):
    sink = InfluxV2Sink(InfluxSettings(api=InfluxApi.v2, url=victoria.url, bucket="finsentry", org="o",
                                       token=SecretStr("t")))
    rejected = asyncio.run(_write(sink, ["sentiment,ticker=NVDA,source=x score=0.75,p_positive=0.8 1772460000123000000"]))
    assert rejected == [] and sink.stats.points == 1
    series = {s["metric"]["__name__"]: s for s in _vm_export(victoria.url)}
    assert series["sentiment_score"]["metric"]["ticker"] == "NVDA"
    assert series["sentiment_score"]["values"] == [0.75]
    assert series["sentiment_score"]["timestamps"] == [1772460000123]


def test_v2_rejected_credentials_are_reported_and_not_acknowledged(caplog):
    server = services.start_victoria_metrics(username="finsentry", password="right")
    try:
        settings = InfluxSettings(api=InfluxApi.v2, url=server.url, token=SecretStr("wrong-token"),
                                  retry_initial=0.1, retry_max=0.3)
        sink = InfluxV2Sink(settings)

        async def scenario():
            await sink.start()
            try:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(sink.write(["sentiment,ticker=A score=1 1"]), 2)
            finally:
                await sink.stop()

        with caplog.at_level(logging.WARNING):
            asyncio.run(scenario())
        assert sink.stats.errors_by_status.get("401", 0) >= 2
        assert "HTTP 401" in sink.stats.last_error
        assert "HTTP 401" in caplog.text and "wrong-token" not in caplog.text
        assert sink.stats.points == 0
    finally:
        server.stop()


def test_line_protocol_file_sink(tmp_path):
    path = tmp_path / "out" / "points.lp"
    sink = LineProtocolFileSink(InfluxSettings(api=InfluxApi.file, line_protocol_file=path))
    assert asyncio.run(_write(sink, ["a x=1 1", "a x=2 2"])) == []
    assert path.read_text() == "a x=1 1\na x=2 2\n"


def test_a_sink_restarted_after_stop_retries_again(influxd):
    # Faust restarts a crashed agent, which stops and starts the sink: it must retry again after that.
    settings = InfluxSettings(api=InfluxApi.v1, url=influxd.url, bucket="restart_db")
    sink = InfluxV1Sink(settings)

    async def scenario():
        await sink.start()
        await sink.stop()
        await sink.start()
        try:
            assert not sink._closed
            return await sink.write(["sentiment,ticker=R score=1 1"])
        finally:
            await sink.stop()

    assert asyncio.run(scenario()) == []
