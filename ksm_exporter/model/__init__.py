"""Values and arithmetic shared by every layer: no I/O, no state."""
