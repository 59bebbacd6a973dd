"""Benchmarks (not tests): they print figures and write them to docs/benchmarks.md."""
