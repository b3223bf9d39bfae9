"""Guest page-table walk for the TLB fill hook once a guest turns paging on.

32-bit paging without PAE (4 KiB pages and, with PSE, 4 MiB pages). Access
rights are not enforced: the test guests run at ring 0.
"""

import struct

from emu.machine.memory import GuestMemory

_PRESENT = 0x1
_PAGE_SIZE_4M = 0x80


def translate(memory: GuestMemory, cr3: int, vaddr: int, _access: int) -> int | None:
    """The physical page of ``vaddr``, or None when it is not present (a page fault)."""
    pde_address = (cr3 & 0xFFFFF000) + ((vaddr >> 22) << 2)
    if pde_address + 4 > memory.size:
        return None
    (pde,) = struct.unpack_from("<I", memory.mem, pde_address)
    if not pde & _PRESENT:
        return None
    if pde & _PAGE_SIZE_4M:
        return (pde & 0xFFC00000) | (vaddr & 0x003FF000)
    pte_address = (pde & 0xFFFFF000) + (((vaddr >> 12) & 0x3FF) << 2)
    if pte_address + 4 > memory.size:
        return None
    (pte,) = struct.unpack_from("<I", memory.mem, pte_address)
    if not pte & _PRESENT:
        return None
    return pte & 0xFFFFF000
