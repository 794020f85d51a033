"""Thin Lambda adapters: parse the event, call the package, map results and errors to HTTP responses."""
