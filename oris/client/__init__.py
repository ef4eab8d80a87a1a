"""Typed HTTP client for the Oris API, used by the worker, the operator CLI and the drills."""

from oris.client.http import ApiError, OrisClient, ServerUnreachable

__all__ = ["ApiError", "OrisClient", "ServerUnreachable"]
