"""FastAPI's own OpenTelemetry bridge, switched off in every app we build.

edgestate exports its own metrics (`/metrics`, Prometheus) and installs no OpenTelemetry provider.
With the bridge on (FastAPI's default since 0.16x), every request asked OpenTelemetry whether a
provider had been configured meanwhile (environment lookups included): 4.4 us per request here,
for nothing, and spans would start appearing if someone's environment configured a provider.
"""

from fastapi.telemetry import TelemetryConfig

OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
