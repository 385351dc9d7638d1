"""State over time: snapshots, the transition tracker, settle detection, the state file,
the landing page's chart, and the failed reads.

The watcher thread is the one writer of edges, history, the state file, settle and the log
(KsmMonitor.poll, Notices.flush). A scrape writes only the counters of its own failed
reads (read_errors) and notes a log line for the watcher to write (notices)."""
