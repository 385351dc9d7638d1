"""The VM's name and platform identifiers from a qemu command line.

libvirt starts qemu with `-name guest=NAME,debug-threads=on`; by hand it is `-name NAME`
or `-name NAME,process=qemu:NAME`. The value is a QEMU option list: comma-separated
`key=value` items, the first of which may leave out `guest=`, and a doubled comma stands
for a comma in a value.

What each platform puts on the command line (tests/fixtures/cmdlines/ holds one of each):
- Proxmox VE (qemu-server): `/usr/bin/kvm -id VMID -name 'NAME,debug-threads=on' ...
  -smbios 'type=1,uuid=UUID'`;
- libvirt, and so OpenStack nova (domain `instance-%08x`): `-name guest=NAME,... -uuid UUID`;
- KubeVirt's virt-launcher: libvirt with the domain named `NAMESPACE_NAME`
  (VMINamespaceKeyFunc), SMBIOS family and manufacturer `KubeVirt` by default, and disks
  and sockets under /var/run/kubevirt*.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ksm_exporter.model.labels import bounded_label


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


def option_values(argv: Sequence[str], *options: str) -> list[str]:
    """The values of every occurrence of the given options, in order."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in options]


def vm_name(argv: Sequence[str]) -> str | None:
    """The guest name of the -name (or --name) options. qemu merges repeated -name options,
    a later value of a key replacing an earlier one, so the last guest name wins."""
    name: str | None = None
    for value in option_values(argv, "-name", "--name"):
        name = guest_name(value) or name
    return name


_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
_VMID = re.compile(r"[0-9]{1,10}\Z")
# A Kubernetes namespace is a DNS-1123 label, a VMI name a DNS-1123 subdomain: neither
# holds an underscore, so KubeVirt's NAMESPACE_NAME splits at the first one.
_KUBEVIRT_DOMAIN = re.compile(
    r"([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)_([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)\Z"
)


@dataclass(frozen=True)
class VmIdentity:
    """What identifies a VM to its platform's operator; "" where the command line does not
    say (an empty label value is an absent label to Prometheus)."""

    vm: str  # the guest name (for KubeVirt: the VMI name); else the process name
    vmid: str = ""  # Proxmox VE's VMID, `-id`
    uuid: str = ""  # `-uuid` (libvirt, OpenStack: the instance UUID), else SMBIOS type 1
    namespace: str = ""  # KubeVirt: the VMI's namespace


IDENTIFIERS = ("namespace", "vmid", "uuid")  # besides vm, in the order tables show them


def label_values(identity: VmIdentity) -> list[str]:
    """vm, vmid, uuid, namespace as labels, each bounded (bounded_label)."""
    return [
        bounded_label(identity.vm),
        bounded_label(identity.vmid),
        bounded_label(identity.uuid),
        bounded_label(identity.namespace),
    ]


def present_identifiers(identities: Sequence[VmIdentity]) -> list[str]:
    """The identifiers any of these VMs has: the columns a table of them needs (a libvirt
    node's table has no vmid column, a Proxmox VE node's no namespace)."""
    return [name for name in IDENTIFIERS if any(getattr(i, name) for i in identities)]


def smbios_uuid(argv: Sequence[str]) -> str | None:
    """uuid= of `-smbios type=1,...`, the system UUID Proxmox VE sets this way."""
    found = None
    for value in option_values(argv, "-smbios", "--smbios"):
        items = dict(item.partition("=")[::2] for item in split_option_list(value))
        if items.get("type") == "1" and "uuid" in items:
            found = items["uuid"]
    return found


def is_kubevirt(argv: Sequence[str]) -> bool:
    """The marks virt-launcher leaves: its run directories in paths, or the SMBIOS
    family/manufacturer KubeVirt it sets by default."""
    if any("/run/kubevirt" in arg for arg in argv):  # /var/run/kubevirt{,-private,...}
        return True
    for value in option_values(argv, "-smbios", "--smbios"):
        items = split_option_list(value)
        if "family=KubeVirt" in items or "manufacturer=KubeVirt" in items:
            return True
    return False


def vm_identity(argv: Sequence[str], process_name: str) -> VmIdentity:
    """The labels of a VM process; each identifier only where its command line gives it (a
    malformed one is left out: it identifies nothing). UUIDs in lower case, as libvirt
    and Proxmox VE write them, so one VM keeps one series."""
    name = vm_name(argv) or process_name
    uuids = option_values(argv, "-uuid", "--uuid")
    uuid = uuids[-1] if uuids else smbios_uuid(argv)
    ids = option_values(argv, "-id")
    vmid = ids[-1] if ids else ""
    namespace = ""
    domain = _KUBEVIRT_DOMAIN.match(name)
    if domain is not None and is_kubevirt(argv):
        namespace, name = domain.group(1), domain.group(3)
    return VmIdentity(
        vm=name,
        vmid=vmid if _VMID.match(vmid) else "",
        uuid=uuid.lower() if uuid and _UUID.match(uuid) else "",
        namespace=namespace,
    )
