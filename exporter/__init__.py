"""x-usage-exporter: Prometheus exporter for X API pay-per-use usage and spend."""

__version__ = "0.1.0"
