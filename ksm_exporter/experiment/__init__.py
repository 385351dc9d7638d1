"""The `experiment` command: the only part of ksm-exporter that writes to KSM's sysfs."""
