"""Benchmarks: each runs the project's path side by side with the obvious baseline in one process."""
