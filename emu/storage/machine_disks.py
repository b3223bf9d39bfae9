"""A started machine's disks: each attachment opened as its medium type says.

The machine writes only its own diffs (ownership.py): before a start, every
leaf diff a guest will write is checked against that rule.
"""

from emu.storage.chain import Chain, close_all, open_chain
from emu.storage.machine_store import MachineStore
from emu.storage.media import MediumType, open_shareable


def check_leaves(store: MachineStore, skip: list[int]) -> None:
    """Refuse a start whose guest would write a diff the machine does not own
    (``skip``: ports whose leaf is replaced by a new diff first)."""
    cfg = store.config
    for port, leaf in cfg.leaves.items():
        if port not in skip and cfg.media[leaf].parent is not None:
            store.diff_to_write(leaf)


def open_disks(store: MachineStore) -> dict[int, Chain]:
    """Every attachment's leaf and parents as one block device; port -> device."""
    cfg = store.config
    registry = store.registry()
    devices: dict[int, Chain] = {}
    try:
        for port, att in sorted(cfg.attachments.items()):
            leaf = store.path(cfg.leaves[port])
            if att.type is MediumType.SHAREABLE:
                devices[port] = open_shareable(leaf)
            else:
                devices[port] = open_chain(
                    leaf, read_only=att.type is MediumType.READONLY, registry=registry
                )
    except BaseException:
        close_disks(devices)
        raise
    return devices


def close_disks(devices: dict[int, Chain]) -> None:
    """Flush and close every device; the first failure is raised after all are closed."""
    close_all(devices.values())
