"""Subcommands: serve (the daemon), status, watch, experiment."""
