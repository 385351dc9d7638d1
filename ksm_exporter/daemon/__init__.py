"""The long-running process: the watcher thread, the web server, systemd."""
