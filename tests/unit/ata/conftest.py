import pytest

from emu.ata import AtaDisk
from emu.storage.blockdev import SECTOR_SIZE
from emu.testing.memory_disk import MemoryDevice

IMAGE_SECTORS = 2048  # 1 MiB


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(IMAGE_SECTORS * SECTOR_SIZE))
    return path


@pytest.fixture
def raw_disk(image_path):
    """An AtaDisk on a 1 MiB raw image file."""
    from emu.storage.raw import RawImage  # here: only the file-backed tests need it

    image = RawImage(str(image_path))
    yield AtaDisk(image)
    image.close()


@pytest.fixture
def mem():
    return MemoryDevice(IMAGE_SECTORS)


@pytest.fixture
def disk(mem):
    """An AtaDisk on a 1 MiB in-memory device (``mem``)."""
    return AtaDisk(mem)
