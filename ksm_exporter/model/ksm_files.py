"""The files of /sys/kernel/mm/ksm: one table of every integer file of kernels 2.6.32 to
6.18, how the kernel prints it (signed or not), and the metric it becomes. The reader
parses by it (a known file that does not parse is an error), the ksm collector renders
by it.

HELP texts follow the kernel's Documentation/admin-guide/mm/ksm.rst.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    GAUGE = "gauge"
    COUNTER = "counter"


@dataclass(frozen=True)
class FileMetric:
    file: str
    name: str
    kind: Kind
    help: str
    # Divide the file's value by this (milliseconds -> seconds, percent -> ratio): a
    # division, as 70 * 0.01 would print 0.7000000000000001.
    divisor: int = 1
    # Printed with %ld, so it can go negative: general_profit when rmap_items cost more
    # than merging saves; ksm_zero_pages and pages_volatile transiently, as they are sums
    # of racy counters. The others are %lu.
    signed: bool = False


FILE_METRICS: tuple[FileMetric, ...] = (
    FileMetric(
        "pages_shared", "ksm_pages_shared", Kind.GAUGE, "How many shared pages are being used."
    ),
    FileMetric(
        "pages_sharing",
        "ksm_pages_sharing",
        Kind.GAUGE,
        "How many more sites are sharing them, i.e. how much saved.",
    ),
    FileMetric(
        "pages_unshared",
        "ksm_pages_unshared",
        Kind.GAUGE,
        "How many pages unique but repeatedly checked for merging.",
    ),
    FileMetric(
        "pages_volatile",
        "ksm_pages_volatile",
        Kind.GAUGE,
        "How many pages changing too fast to be placed in a tree.",
        signed=True,
    ),
    FileMetric(
        "stable_node_chains",
        "ksm_stable_node_chains",
        Kind.GAUGE,
        "The number of KSM pages that hit the max_page_sharing limit.",
    ),
    FileMetric(
        "stable_node_dups", "ksm_stable_node_dups", Kind.GAUGE, "Number of duplicated KSM pages."
    ),
    FileMetric(
        "ksm_zero_pages",
        "ksm_zero_pages",
        Kind.GAUGE,
        "How many zero pages that are still mapped into processes were mapped by KSM "
        "when deduplicating.",
        signed=True,
    ),
    FileMetric(
        "general_profit",
        "ksm_general_profit_bytes",
        Kind.GAUGE,
        "How effective is KSM: saved pages times page size minus the memory of all "
        "rmap_items; negative when KSM costs more than it saves.",
        signed=True,
    ),
    FileMetric(
        "pages_to_scan",
        "ksm_pages_to_scan",
        Kind.GAUGE,
        "How many pages to scan before ksmd goes to sleep.",
    ),
    FileMetric(
        "sleep_millisecs",
        "ksm_sleep_seconds",
        Kind.GAUGE,
        "How long ksmd should sleep before next scan (sleep_millisecs).",
        divisor=1000,
    ),
    FileMetric(
        "stable_node_chains_prune_millisecs",
        "ksm_stable_node_chains_prune_seconds",
        Kind.GAUGE,
        "How frequently KSM checks the metadata of the pages that hit the deduplication "
        "limit for stale information (stable_node_chains_prune_millisecs).",
        divisor=1000,
    ),
    FileMetric(
        "merge_across_nodes",
        "ksm_merge_across_nodes",
        Kind.GAUGE,
        "Whether pages from different NUMA nodes can be merged (1) or only pages of the "
        "same node (0).",
    ),
    FileMetric(
        "use_zero_pages",
        "ksm_use_zero_pages",
        Kind.GAUGE,
        "Whether empty pages are merged with the kernel zero page(s) instead of with each other.",
    ),
    FileMetric(
        "max_page_sharing",
        "ksm_max_page_sharing",
        Kind.GAUGE,
        "Maximum sharing allowed for each KSM page.",
    ),
    FileMetric(
        "smart_scan",
        "ksm_smart_scan",
        Kind.GAUGE,
        "Whether smart scan skips pages that have previously not been de-duplicated.",
    ),
    FileMetric(
        "run",
        "ksm_run",
        Kind.GAUGE,
        "Raw run file: 0 ksmd stopped keeping merged pages, 1 ksmd running, 2 stopped and "
        "unmerging all pages; plus 4 while memory is hot-removed.",
    ),
    FileMetric(
        "full_scans",
        "ksm_full_scans_total",
        Kind.COUNTER,
        "How many times all mergeable areas have been scanned.",
    ),
    FileMetric(
        "pages_scanned",
        "ksm_pages_scanned_total",
        Kind.COUNTER,
        "How many pages are being scanned for ksm.",
    ),
    FileMetric(
        "pages_skipped",
        "ksm_pages_skipped_total",
        Kind.COUNTER,
        'How many pages did the "smart" page scanning algorithm skip.',
    ),
    FileMetric(
        "advisor_max_cpu",
        "ksm_advisor_max_cpu_ratio",
        Kind.GAUGE,
        "Upper limit of the cpu usage of the ksmd background thread for the scan time "
        "advisor, as a ratio (advisor_max_cpu percent / 100).",
        divisor=100,
    ),
    FileMetric(
        "advisor_min_pages_to_scan",
        "ksm_advisor_min_pages_to_scan",
        Kind.GAUGE,
        "Lower limit of the pages_to_scan parameter of the scan time advisor.",
    ),
    FileMetric(
        "advisor_max_pages_to_scan",
        "ksm_advisor_max_pages_to_scan",
        Kind.GAUGE,
        "Upper limit of the pages_to_scan parameter of the scan time advisor.",
    ),
    FileMetric(
        "advisor_target_scan_time",
        "ksm_advisor_target_scan_time_seconds",
        Kind.GAUGE,
        "Target scan time in seconds to scan all the candidate pages.",
    ),
)

BY_FILE = {m.file: m for m in FILE_METRICS}

# The one text file: `[none] scan-time`, exported as ksm_advisor_mode{mode}.
ADVISOR_MODE = "advisor_mode"

ADVISOR_MODE_HELP = (
    "The current KSM advisor: 1 for the active mode (none: no advisor; scan-time: "
    "pages_to_scan adapted to reach the target scan time), 0 for the others."
)


# Files this exporter version does not describe (a newer kernel's) that hold one integer:
# one family, the file name a label. A metric name made from the file name could collide
# with the exporter's own families (a file `memory_total_bytes`, `settled`, or
# `run_transitions_total` beside ksm_run_transitions) or with another file's once
# sanitised (`foo-bar`, `foo_bar`), and Prometheus rejects a scrape with a duplicate
# family; a label value is any text, so every file keeps its exact name and nothing clashes.
UNKNOWN_FILE_METRIC = "ksm_unknown_file_value"
UNKNOWN_FILE_HELP = (
    "Value of a file of /sys/kernel/mm/ksm that this exporter version does not describe "
    "(a newer kernel's), by file name; its unit is not known."
)
