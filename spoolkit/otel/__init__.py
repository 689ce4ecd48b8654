"""spoolkit.otel: durable OpenTelemetry exporters (filled in below)."""
