"""The long-running process: the watcher thread, the scraper, the HTTP server, liveness,
systemd, and the exporter's own metrics."""
