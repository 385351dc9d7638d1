"""Subcommands: serve (the daemon), status, watch, transitions, experiment."""
