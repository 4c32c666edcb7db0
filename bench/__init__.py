"""Benchmarks: scripts that print JSON, comparing against baselines measured in the same run."""
