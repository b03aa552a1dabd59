"""Settings from env and files; secrets never in repr or logs."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from streams.contracts.settings import InfluxApi, Settings


def test_env_overrides_nested_settings(monkeypatch):
    monkeypatch.setenv("FINSENTRY_KAFKA__BROKER", "kafka://k1:9092;kafka://k2:9092")
    monkeypatch.setenv("FINSENTRY_INFLUX__API", "v1")
    monkeypatch.setenv("FINSENTRY_BATCH__SIZE", "64")
    monkeypatch.setenv("FINSENTRY_TOPICS__NEWS", "wire.in")
    s = Settings()
    assert s.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert s.influx.api is InfluxApi.v1 and s.batch.size == 64 and s.topics.news == "wire.in"


def test_secrets_come_from_files_and_never_show(monkeypatch, tmp_path, caplog):
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    monkeypatch.setenv("FINSENTRY_INFLUX__TOKEN_FILE", str(token))
    monkeypatch.setenv("FINSENTRY_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FINSENTRY_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("FINSENTRY_KAFKA__SASL_PASSWORD", "hunter2")
    s = Settings()
    assert s.influx.token.get_secret_value() == "s3cr3t-token"
    dumped = json.dumps(s.redacted()) + repr(s) + str(s)
    assert "s3cr3t" not in dumped and "hunter2" not in dumped


def test_sasl_without_credentials_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FINSENTRY_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ValidationError, match="needs sasl_username and sasl_password"):
        Settings()


def test_settings_file(monkeypatch, tmp_path):
    f = tmp_path / "finsentry.env"
    f.write_text("FINSENTRY_INFLUX__URL=http://influx.internal:8086\nFINSENTRY_BATCH__WAIT=0.5\n")
    monkeypatch.chdir(tmp_path)
    s = Settings(_env_file=str(f))
    assert s.influx.url == "http://influx.internal:8086" and s.batch.wait == 0.5
