"""FastAPI's OpenTelemetry bridge is off in the apps we build (app/web/otel.py): no per-request
question to OpenTelemetry, and no spans even where the environment configures a provider."""

from fastapi import FastAPI
from live_helpers import make_live
from opentelemetry import trace

from app.dashboard.server import create_app
from app.replica.service import create_replica_app
from replication.io.runner import ReplicaRunner
from test_runner import SECRET


class _Configured:
    """What a configured provider looks like to FastAPI: anything but OpenTelemetry's default proxy."""


def test_no_app_of_ours_turns_telemetry_on_when_a_provider_is_configured(tmp_path, monkeypatch):
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: _Configured())
    assert FastAPI()._native_telemetry.enabled()  # FastAPI's default would trace every request now
    replica = create_replica_app(ReplicaRunner("lhr", {}, data_dir=tmp_path / "lhr", secret=SECRET), access_log=False)
    dashboard = create_app(make_live("lhr"), access_log=False)
    for app in (replica, dashboard):
        assert not app._native_telemetry.enabled()  # FastAPI has no public accessor for it
