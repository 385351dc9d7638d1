"""Defaults shared by the flags and the code that uses them, kept at the bottom layer so
that flags.py needs no domain module to print them in --help."""

from __future__ import annotations

from pathlib import Path

# ksmtuned's own pattern for qemu processes (pgrep on the process name): qemu-kvm,
# qemu-system-x86 (the 15-character name of qemu-system-x86_64), and qemu:NAME, the name
# `-name NAME,process=qemu:NAME` gives.
QEMU_PATTERN = r"^qemu(-(kvm|system-.+)|:.{1,11})$"

# The VMs of every platform, by process name alone (no /proc/PID/exe, which takes ptrace
# rights over other users' processes): ksmtuned's names (libvirt, OpenStack, KubeVirt's
# virt-launcher: qemu-kvm or qemu-system-*; plain qemu) and `kvm`, the name of Proxmox VE's
# guests (qemu-server runs /usr/bin/kvm, a link to qemu-system-x86_64). Kernel threads
# are left out whatever their name. The default of --collector.process.pattern.
VM_PATTERN = r"^(qemu(-(kvm|system-.+)|:.{1,11})|kvm)$"

KSMTUNED_CONFIG = Path("/etc/ksmtuned.conf")

# ksm_settled: pages_sharing stable over this many completed full scans.
SETTLE_FULL_SCANS = 3

LOG_LEVELS = ("debug", "info", "warn", "error")
