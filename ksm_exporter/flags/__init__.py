"""Command-line flags in node_exporter's style (--web.listen-address, --path.sysfs ...):
one module per command, the machinery in parser.py. Importing this package loads nothing,
so `status --help` pays only for the status command's flags."""
