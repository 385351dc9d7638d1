"""Fedora's and Proxmox VE's ksmtuned as test data, derived from Debian's.

The three distributions ship the same Red Hat script (GPL) and differ in a handful of
lines: how committed_memory() picks and sums its processes, how free_memory() prints, a
KSM_PS_METRIC default and a sleep. Debian's script is kept whole (it comes from Debian's
package, tests/fixtures/ksmtuned/README.md); the two others are Debian's with exactly
those lines replaced, as their upstream texts have them (sources, versions and the
upstream files' sha256 in that README). The replaced lines are written here, not copied
files, so the fixtures hold one distribution's script and two sets of documented edits.

    python -m tests.support.ksmtuned_scripts   # rewrite fedora-ksmtuned, proxmox-ksmtuned
"""

from __future__ import annotations

from pathlib import Path

KSMTUNED_FIXTURES = Path(__file__).parent.parent / "fixtures" / "ksmtuned"
DEBIAN = KSMTUNED_FIXTURES / "debian-ksmtuned"

_DEBIAN_COMMITTED = """\
    local pidlist
    pidlist=$(pgrep -f -d ' ' '^qemu-system.*-enable-kvm')
"""
_DEBIAN_FREE = "END {print free}' \\\n"

# (Debian's text, the distribution's text), applied in order, each exactly once.
EDITS: dict[str, list[tuple[str, str]]] = {
    # ksmtuned v0.1.0 (github.com/ksmtuned/ksmtuned, src/ksmtuned.sh.in): by process name.
    "fedora": [
        (
            _DEBIAN_COMMITTED,
            "    # calculate how much memory is committed to running qemu processes\n"
            "    local pidlist\n"
            "    pidlist=$(pgrep -d ' ' -- '^qemu(-(kvm|system-.+)|:.{1,11})$')\n",
        ),
    ],
    # ksm-control-daemon 1.5-1 (its debian/patches, use-pss-instead-of-rsz last): ps -C kvm.
    "proxmox": [
        ("KSM_SLEEP_MSEC=${KSM_SLEEP_MSEC:-10}\n", "KSM_SLEEP_MSEC=${KSM_SLEEP_MSEC:-100}\n"),
        (
            "KSM_THRES_CONST=${KSM_THRES_CONST:-2048}\n",
            "KSM_THRES_CONST=${KSM_THRES_CONST:-2048}\n\n"
            "KSM_PS_METRIC=${KSM_PS_METRIC:-pss}\n\ndebug using $KSM_PS_METRIC metric\n",
        ),
        (
            _DEBIAN_COMMITTED + '    if [ -n "$pidlist" ]; then\n'
            '        ps -p "$pidlist" -o rsz=\n'
            "    fi | awk '{ sum += $1 }; END { print 0+sum }'\n",
            "    # calculate how much memory is committed to running qemu processes\n"
            "    local progname\n"
            "    progname=${1:-kvm}\n"
            '    ps -C "$progname" -o "$KSM_PS_METRIC" | '
            "awk '{ sum += $1 }; END { printf (\"%.0f\", sum) }'\n",
        ),
        (_DEBIAN_FREE, 'END { printf ("%.0f", free) }\' \\\n'),
        (
            "        sleep $KSM_MONITOR_INTERVAL &\n        wait $!\n",
            "        sleep $KSM_MONITOR_INTERVAL\n",
        ),
    ],
}

_NOTE = (
    "# Test data: Debian's ksmtuned (debian-ksmtuned) with the lines that differ in {name}'s\n"
    "# replaced (tests/support/ksmtuned_scripts.py; sources in README.md).\n"
)


def derived(name: str) -> str:
    """Debian's script with `name`'s edits; the note goes after the #! line."""
    text = DEBIAN.read_text()
    for old, new in EDITS[name]:
        if text.count(old) != 1:
            raise ValueError(f"{name}: {old!r} is not once in {DEBIAN}")
        text = text.replace(old, new)
    shebang, rest = text.split("\n", 1)
    return f"{shebang}\n{_NOTE.format(name=name)}{rest}"


def fixture(name: str) -> Path:
    return KSMTUNED_FIXTURES / f"{name}-ksmtuned"


def main() -> None:
    for name in EDITS:
        fixture(name).write_text(derived(name))
        print(f"wrote {fixture(name)}")


if __name__ == "__main__":
    main()
