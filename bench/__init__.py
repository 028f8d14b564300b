"""rerank-bench: the benchmark harness (config, data, training, measurement, records, reports, CLI)."""

__version__ = "0.1.0"
