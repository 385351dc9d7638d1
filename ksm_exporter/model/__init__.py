"""Values, tables and arithmetic shared by every layer (run states, the KSM file table,
edge causes, qemu identities, defaults): no file read, no thread, no state."""
