"""Benchmarks: reproducible measurements of the exporter's forecast and performance."""
