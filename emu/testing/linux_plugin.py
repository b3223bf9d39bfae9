"""pytest fixtures for Linux guests (loaded by the ``ahci_emu`` plugin).

``linux_material``
    The cached kernel and busybox (:class:`emu.linuxkit.material.Material`), for
    the session. Missing material skips the test with the command that fetches
    it, or fails it when ``CI=true``.
``linux``
    A :class:`~emu.testing.linux.LinuxRig` on the test's ``ahci`` rig:
    ``linux.boot(script, *disks)`` boots the kernel with ``script`` and returns a
    :class:`~emu.testing.linux.LinuxRun`; ``linux.boot(script, vm=vm)`` starts a
    machine folder. It boots where ``ahci_backend`` says, so a test marked
    ``ahci_oracle`` runs under ahci-emu and under QEMU.
"""

from __future__ import annotations

import os

import pytest

from emu.linuxkit.material import Material, MaterialError, load
from emu.testing.linux import LinuxRig
from emu.testing.rig import Rig


def require_material() -> Material:
    """The Linux material, or a skip (a failure under ``CI=true``) saying how to get it."""
    try:
        return load()
    except MaterialError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Linux material missing in CI: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def linux_material() -> Material:
    """The cached Debian kernel and busybox (``ahci-emu linux fetch``)."""
    return require_material()


@pytest.fixture
def linux(ahci: Rig, ahci_backend: str, linux_material: Material) -> LinuxRig:
    """Boot Linux guests with a script on the test's disks; see the module doc."""
    return LinuxRig(ahci, linux_material, backend=ahci_backend)
