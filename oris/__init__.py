"""Oris runtime: a durable job execution runtime with an HTTP API and lease-based workers."""

__version__ = "0.1.0"
