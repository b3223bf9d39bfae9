"""Three disks on three ports, one of them immutable, across two boots.

A machine folder with an immutable 32 MiB VDI on port 0, a normal 48 MiB VDI
on port 1 and a normal 64 MiB raw image on port 2. Boot 1 finds each disk's
port from sysfs (``ataN``), checks its size and writes a marker naming the port
into its first sector. Boot 2 (a new start: the immutable disk's diff is reset)
reads the markers back: port 0 shows its base again, ports 1 and 2 their markers.
"""

from __future__ import annotations

import pytest
from support.linux_disks import MIB, chain_bytes, sha256, trouble

SIZES = {0: 32 * MIB, 1: 48 * MIB, 2: 64 * MIB}

# For each disk: its port (ata1 is port 0), its size, and its first sector's
# sha256 before and after writing "port N" there (WRITE=1) or just the sha256.
SCRIPT = """\
set -e
for sys in /sys/block/sd*; do
  dev=/dev/${sys##*/}
  ata=$(readlink -f $sys/device | grep -o 'ata[0-9]*' | head -n 1)
  port=$((${ata#ata} - 1))
  echo "port${port}_sectors=$(cat $sys/size)"
  echo "port${port}_first=$(dd if=$dev bs=512 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)"
  if [ "$WRITE" = 1 ]; then
    printf 'port %s' "$port" | dd of=$dev bs=512 count=1 conv=sync,notrunc 2>/dev/null
  fi
done
sync
"""


def sector(text: str) -> bytes:
    return text.encode().ljust(512, b"\0")


@pytest.mark.ahci_oracle
@pytest.mark.timeout(1000)  # boots of up to 5 minutes each (LinuxRig's budget)
def test_three_disks_on_three_ports_and_the_immutable_one_reset(ahci, linux):
    vm = ahci.machine("vm")
    immutable = ahci.image("vm/immutable.vdi", SIZES[0])
    ahci.fill(immutable, 0, 64, 1)
    vm.attach(0, immutable, "immutable")
    vm.attach(1, ahci.image("vm/normal.vdi", SIZES[1]))
    vm.attach(2, ahci.image("vm/raw.img", SIZES[2]))
    base_before = sha256(immutable.read_bytes())
    first_sector = chain_bytes(immutable, 0, 512)

    one = linux.boot("WRITE=1\n" + SCRIPT, vm=vm).assert_ok()
    seen = one.values()
    for port, size in SIZES.items():
        assert seen[f"port{port}_sectors"] == str(size // 512)
        assert one.messages(f"ata{port + 1}: SATA link up")
    assert seen["port0_first"] == sha256(first_sector)
    assert seen["port1_first"] == seen["port2_first"] == sha256(bytes(512))
    assert not one.messages("ata4: SATA link up")
    assert trouble(one.dmesg) == []
    # Each marker landed in its own port's image; the immutable base was not written.
    registry = vm.registry()
    for port in SIZES:
        assert chain_bytes(vm.leaf(port), 0, 512, registry) == sector(f"port {port}")
    assert vm.leaf(0) != immutable and sha256(immutable.read_bytes()) == base_before

    two = linux.boot(SCRIPT, vm=vm).assert_ok()
    again = two.values()
    assert again["port0_first"] == sha256(first_sector)  # reset at this start
    assert again["port1_first"] == sha256(sector("port 1"))
    assert again["port2_first"] == sha256(sector("port 2"))
    assert sha256(immutable.read_bytes()) == base_before
