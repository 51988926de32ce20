"""Benchmarks: they print figures (never asserted as time limits). Run with ``make bench``."""
