"""Flower strategies, one per file; their maths lives in pure functions."""
