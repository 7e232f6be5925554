"""Helpers of the test suite that are not tests: Go-built OpenTelemetry tools (`tools.gotools`)."""
