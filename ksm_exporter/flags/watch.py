"""`ksm-exporter watch`: a line at each KSM start and stop, like checkKSM_start_time.sh."""

from __future__ import annotations

from ksm_exporter.flags.parser import OneLineParser, add_option, add_path_flags, add_watch_interval
from ksm_exporter.readers.ksmtuned_conf import CONFIG_OPTION


def parser() -> OneLineParser:
    p = OneLineParser(
        prog="ksm-exporter watch",
        description="Print a line at each KSM start and stop, like checkKSM_start_time.sh.",
    )
    add_path_flags(p)
    add_watch_interval(p)
    p.add_argument(
        "--explain",
        action="store_true",
        help="append to each line who made the change (ksmtuned, other, unknown) and "
        "ksmtuned's free memory, threshold and committed memory at that moment",
    )
    add_option(p, CONFIG_OPTION)
    return p
