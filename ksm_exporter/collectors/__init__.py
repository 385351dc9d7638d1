"""Collectors: each reads its source once per scrape and renders families with pure
functions. They read state and change none, but for counting their own failed reads
(state/read_errors.py); what they read beyond their families (the VMs) they return."""
