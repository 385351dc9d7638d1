"""Exposition: metrics, landing page, JSON and text output. Reads snapshots and tracker
state; never reads files itself."""
