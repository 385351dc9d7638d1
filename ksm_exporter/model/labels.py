"""Label values taken from what a process says about itself (its command line, its
script's path and text), bounded in length.

Any user can start a process named like qemu, or like ksmtuned, whose command line holds
a 10 KB name. Prometheus refuses a whole scrape when one label value is longer than its
`label_value_length_limit` (1024 is common), so one such process would take every series
of the node with it; and 200 of them made /metrics 72 MB.
"""

from __future__ import annotations

import hashlib

# At most this many characters: 512 bytes of UTF-8, under any limit of 1024.
LABEL_MAX_CHARS = 128
LABEL_HASH_CHARS = 8


def bounded_label(value: str) -> str:
    """`value`, or when longer than LABEL_MAX_CHARS its start, an ellipsis and 8 hex digits of
    a hash of the whole value: two long names that start alike stay two series."""
    if len(value) <= LABEL_MAX_CHARS:
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return value[: LABEL_MAX_CHARS - LABEL_HASH_CHARS - 1] + "\u2026" + digest
