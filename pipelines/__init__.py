"""Beam pipelines: raw-format readers, image handling, shard I/O, runners and stages."""
