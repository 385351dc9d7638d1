"""The two result matrices of a manual KSM test (KSM disabled, KSM enabled): table and JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ksm_exporter.model.derived import awk_number


@dataclass(frozen=True)
class Matrix:
    """One column. MB are whole MiB (bytes // 1048576), as `free -m` prints them;
    used is MemTotal - MemFree, procps 3.2's `free -m` used."""

    used_mb: int
    free_mb: int
    saved_mb: int
    sharing_rate: float
    general_profit_bytes: int | None  # absent on older kernels
    full_scans: int
    settle_seconds: float | None  # not settled within --timeout, or KSM was off
    ksmd_cpu_seconds: float | None  # no ksmd found in procfs


# Keys of the JSON, in order; the field names are the interface (see docs/experiment.md).
KEYS = tuple(Matrix.__dataclass_fields__)

_ROWS = (
    ("used_mb", "Mem used (MB)"),
    ("free_mb", "Mem free (MB)"),
    ("saved_mb", "KSM saved (MB)"),
    ("sharing_rate", "Sharing_Rate"),
    ("general_profit_bytes", "General_Profit (bytes)"),
    ("full_scans", "Full_Scans"),
    ("settle_seconds", "Settle (s)"),
    ("ksmd_cpu_seconds", "ksmd CPU (s)"),
)


def _cell(key: str, value: object) -> str:
    if value is None:
        return "-"
    if key == "sharing_rate":
        return awk_number(float(value))  # type: ignore[arg-type]
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def matrices_json(disabled: Matrix, enabled: Matrix) -> dict[str, dict[str, object]]:
    return {"disabled": asdict(disabled), "enabled": asdict(enabled)}


def matrices_table(disabled: Matrix, enabled: Matrix) -> str:
    """Rows are the measures, one column per matrix, numbers aligned right."""
    head = [("", "Matrix 1", "Matrix 2"), ("", "KSM disabled", "KSM enabled")]
    body = [
        (label, _cell(key, getattr(disabled, key)), _cell(key, getattr(enabled, key)))
        for key, label in _ROWS
    ]
    rows = head + body
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}" for a, b, c in rows]
    lines.insert(len(head), "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)
