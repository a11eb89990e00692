"""Benchmarks and soak test of the annotation gateway (``make bench``, ``make soak``).

Everything here runs on loopback only, pins servers to core 0 and the load generator to core 1,
and bounds every load loop in time and count. See ``bench/README.md``.
"""
