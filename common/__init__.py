"""Quantum Trader's shared library: contracts, stream registry, keys, config, logging, the bus runtime."""
