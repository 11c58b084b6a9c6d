"""Thin Beam shells around the pure logic: one module per stage."""
