"""Guest page-table walks.

:func:`translate`: 32-bit paging without PAE (4 KiB pages and, with PSE, 4 MiB
pages), for the multiboot board's TLB fill once a guest turns paging on.
Access rights are not enforced: the test guests run at ring 0.

:func:`translate_long`: 4-level long-mode paging (4 KiB, 2 MiB and 1 GiB pages),
for the Linux board to look at guest structures (the IDT) by virtual address.
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


_LONG_ADDRESS = 0x000FFFFFFFFFF000


def translate_long(memory: GuestMemory, cr3: int, vaddr: int) -> int | None:
    """The physical address of ``vaddr`` under 4-level paging, or None if not present."""
    table = cr3 & _LONG_ADDRESS
    for level, shift in enumerate((39, 30, 21, 12)):
        entry_address = table + ((vaddr >> shift) & 0x1FF) * 8
        if entry_address + 8 > memory.size:
            return None
        (entry,) = struct.unpack_from("<Q", memory.mem, entry_address)
        if not entry & _PRESENT:
            return None
        if level in (1, 2) and entry & _PAGE_SIZE_4M:  # PS: a 1 GiB or 2 MiB page
            offset_mask = (1 << shift) - 1
            return (entry & _LONG_ADDRESS & ~offset_mask) | (vaddr & offset_mask)
        table = entry & _LONG_ADDRESS
    return table | (vaddr & 0xFFF)
