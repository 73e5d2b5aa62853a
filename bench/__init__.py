"""Benchmarks: each reports its figure beside a baseline measured in the same run."""
