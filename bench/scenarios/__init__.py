"""Benchmark scenarios: one module per workload; each registers itself with bench.registry."""
