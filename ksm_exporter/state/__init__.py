"""State over time: snapshots, the transition tracker, settle detection, the state file.

Only the watcher thread writes it; scrapes read it."""
