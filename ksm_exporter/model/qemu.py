"""The VM's name from a qemu command line.

libvirt starts qemu with `-name guest=NAME,debug-threads=on`; by hand it is `-name NAME`
or `-name NAME,process=qemu:NAME`. The value is a QEMU option list: comma-separated
`key=value` items, the first of which may leave out `guest=`, and a doubled comma stands
for a comma in a value.
"""

from __future__ import annotations

from collections.abc import Sequence


def split_option_list(text: str) -> list[str]:
    """QemuOpts items: split at single commas, `,,` is a literal comma."""
    items: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                current.append(",")
                i += 2
                continue
            items.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    items.append("".join(current))
    return items


def guest_name(option: str) -> str | None:
    """The guest name in the value of -name, or None when it does not give one. As
    across -name options, a later `guest=` replaces an earlier one (or the implied one)."""
    name = ""
    for index, item in enumerate(split_option_list(option)):
        key, sep, value = item.partition("=")
        if not sep:
            if index == 0:  # the implied key: `-name NAME,...`
                name = item
        elif key == "guest":
            name = value
    return name or None


def vm_name(argv: Sequence[str]) -> str | None:
    """The guest name of the -name (or --name) options. qemu merges repeated -name options,
    a later value of a key replacing an earlier one, so the last guest name wins."""
    name: str | None = None
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-name", "--name"):
            name = guest_name(argv[i + 1]) or name
    return name
