"""A newc cpio reader written from the format's description (buffer-format.rst), to
check the writer with code that shares nothing with it."""


def parse_newc(blob: bytes) -> list[dict]:
    """Entries of a newc archive (buffer-format.rst): header, name, data, 4-byte pads."""
    entries, pos = [], 0
    while True:
        assert blob[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = blob[name_start : name_start + namesize]
        assert name.endswith(b"\0")
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        data = blob[data_start : data_start + filesize]
        pos = data_start + filesize + (-filesize % 4)
        entry = {"name": name[:-1].decode(), "ino": fields[0], "mode": fields[1],
                 "nlink": fields[4], "rdev": (fields[9], fields[10]), "data": data}  # fmt: skip
        if entry["name"] == "TRAILER!!!":
            assert not blob[pos:].strip(b"\0"), "bytes after the trailer"
            return entries
        entries.append(entry)
