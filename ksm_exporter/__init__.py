"""Prometheus exporter for Linux Kernel Same-page Merging (KSM)."""

__version__ = "0.1.0"
