#!/usr/bin/env python3
"""Build every guest in firmware/guests/*.c into guest_images/NAME.elf.

Standard library only. Each guest is start.S + all of lib/*.c + guests/NAME.c,
compiled with gcc -m32 and linked with GNU ld using link.ld. The output is
reproducible: the same bytes on every rebuild, whatever the checkout path
(sources are compiled from inside the firmware directory with relative names,
and no build IDs, timestamps or debug info go into the image).

guest_images/manifest.json lists, per guest, the sha256 of the ELF and a hash
of every source file that goes into it plus the build flags (see
source_hash()), so a test can tell when a guest was not rebuilt after a
source change.

Usage: build.py [--out DIR] [--build-dir DIR] [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FIRMWARE_DIR = Path(__file__).resolve().parent
REPO_DIR = FIRMWARE_DIR.parent
DEFAULT_OUT_DIR = REPO_DIR / "guest_images"
DEFAULT_BUILD_DIR = FIRMWARE_DIR / "build"
MANIFEST_NAME = "manifest.json"

CC = "gcc"
LD = "ld"

# -ffile-prefix-map gets the firmware directory substituted at build time;
# the placeholder keeps the flags (and thus the source hash) path-independent.
FIRMWARE_DIR_PLACEHOLDER = "@FIRMWARE_DIR@"

CFLAGS = (
    "-m32",
    "-march=i686",
    "-ffreestanding",
    "-nostdlib",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    f"-ffile-prefix-map={FIRMWARE_DIR_PLACEHOLDER}=.",
    "-Ilib",
)
LDFLAGS = ("-m", "elf_i386", "-T", "link.ld", "--build-id=none", "-nostdlib")

HASH_TAG = b"ahci-emu guest source v1\0"


def guest_names(fw_dir: Path = FIRMWARE_DIR) -> list[str]:
    """Names of all guests: the stems of firmware/guests/*.c, sorted."""
    return sorted(p.stem for p in (fw_dir / "guests").glob("*.c"))


def source_files(fw_dir: Path, guest: str) -> list[str]:
    """Relative paths (POSIX, sorted) of every source file of one guest."""
    files = {"start.S", "link.ld", f"guests/{guest}.c"}
    for path in (fw_dir / "lib").rglob("*"):
        if path.is_file():
            files.add(path.relative_to(fw_dir).as_posix())
    return sorted(files)


def build_flags() -> list[str]:
    """The compile and link flags as hashed (with the path placeholder)."""
    return ["cflags", *CFLAGS, "ldflags", *LDFLAGS]


def source_hash(fw_dir: Path, guest: str) -> str:
    """sha256 over the guest's sources (path names and contents) and flags."""
    fw_dir = Path(fw_dir)
    h = hashlib.sha256(HASH_TAG)
    for rel in source_files(fw_dir, guest):
        data = (fw_dir / rel).read_bytes()
        h.update(b"file\0%s\0%d\0" % (rel.encode(), len(data)))
        h.update(data)
    for flag in build_flags():
        h.update(b"flag\0%s\0" % flag.encode())
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def toolchain_problem() -> str | None:
    """None if gcc -m32 and ld can build a guest, else the reason why not."""
    for tool in (CC, LD):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.c"
        src.write_text("int f(void) { return 0; }\n")
        proc = subprocess.run(
            [CC, "-m32", "-ffreestanding", "-c", "-o", str(Path(tmp) / "t.o"), str(src)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            return f"{CC} -m32 does not work: {proc.stderr.strip()}"
    return None


def _run(cmd: list[str], cwd: Path) -> None:
    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}")


def _cflags(fw_dir: Path) -> list[str]:
    return [f.replace(FIRMWARE_DIR_PLACEHOLDER, str(fw_dir)) for f in CFLAGS]


def _compile(fw_dir: Path, rel: str, obj_dir: Path) -> Path:
    obj = obj_dir / (rel.replace("/", "__") + ".o")
    _run([CC, *_cflags(fw_dir), "-c", rel, "-o", str(obj)], cwd=fw_dir)
    return obj


def build(
    fw_dir: Path = FIRMWARE_DIR,
    out_dir: Path = DEFAULT_OUT_DIR,
    build_dir: Path | None = None,
) -> list[dict[str, str]]:
    """Build every guest; write NAME.elf and manifest.json into out_dir.

    Returns the manifest (a list of {name, elf_sha256, source_sha256}).
    """
    fw_dir = Path(fw_dir).resolve()
    out_dir = Path(out_dir).resolve()
    build_dir = Path(build_dir if build_dir is not None else fw_dir / "build").resolve()
    obj_dir = build_dir / "obj"
    if obj_dir.exists():
        shutil.rmtree(obj_dir)
    obj_dir.mkdir(parents=True)
    out_dir.mkdir(parents=True, exist_ok=True)

    names = guest_names(fw_dir)
    if not names:
        raise RuntimeError(f"no guests in {fw_dir / 'guests'}")

    common = [_compile(fw_dir, "start.S", obj_dir)]
    lib_sources = sorted(p.relative_to(fw_dir).as_posix() for p in (fw_dir / "lib").rglob("*.c"))
    common += [_compile(fw_dir, rel, obj_dir) for rel in lib_sources]

    manifest = []
    for name in names:
        guest_obj = _compile(fw_dir, f"guests/{name}.c", obj_dir)
        linked = build_dir / f"{name}.elf"
        _run(
            [LD, *LDFLAGS, "-o", str(linked), *map(str, common), str(guest_obj)],
            cwd=fw_dir,
        )
        data = linked.read_bytes()
        target = out_dir / f"{name}.elf"
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
        manifest.append(
            {
                "name": name,
                "elf_sha256": hashlib.sha256(data).hexdigest(),
                "source_sha256": source_hash(fw_dir, name),
            }
        )

    _remove_stale(out_dir, {m["name"] for m in manifest})
    text = json.dumps(manifest, indent=2) + "\n"
    manifest_path = out_dir / MANIFEST_NAME
    if not manifest_path.exists() or manifest_path.read_text() != text:
        manifest_path.write_text(text)
    return manifest


def _remove_stale(out_dir: Path, names: set[str]) -> None:
    """Delete images that an earlier manifest listed but no source builds."""
    manifest_path = out_dir / MANIFEST_NAME
    if not manifest_path.exists():
        return
    for entry in json.loads(manifest_path.read_text()):
        if entry["name"] not in names:
            (out_dir / f"{entry['name']}.elf").unlink(missing_ok=True)


def load_manifest(out_dir: Path = DEFAULT_OUT_DIR) -> list[dict[str, str]]:
    return json.loads((Path(out_dir) / MANIFEST_NAME).read_text())


def check_reproducible(fw_dir: Path = FIRMWARE_DIR, out_dir: Path = DEFAULT_OUT_DIR) -> list[str]:
    """Rebuild a copy of fw_dir in a temporary directory; compare with out_dir.

    Returns a list of differences (empty if the committed images and manifest
    are reproduced byte for byte).
    """
    problems = []
    with tempfile.TemporaryDirectory(prefix="guest-rebuild-") as tmp:
        copy = Path(tmp) / "fw"
        shutil.copytree(fw_dir, copy, ignore=shutil.ignore_patterns("build", "__pycache__"))
        fresh = build(copy, Path(tmp) / "out", Path(tmp) / "build")
        for entry in fresh:
            name = entry["name"]
            committed = Path(out_dir) / f"{name}.elf"
            if not committed.exists():
                problems.append(f"{name}: {committed} missing")
            elif committed.read_bytes() != (Path(tmp) / "out" / f"{name}.elf").read_bytes():
                problems.append(f"{name}: rebuilt ELF differs from {committed}")
        committed_manifest = Path(out_dir) / MANIFEST_NAME
        fresh_manifest = Path(tmp) / "out" / MANIFEST_NAME
        if not committed_manifest.exists():
            problems.append(f"{committed_manifest} missing")
        elif committed_manifest.read_bytes() != fresh_manifest.read_bytes():
            problems.append(f"rebuilt manifest differs from {committed_manifest}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="images + manifest")
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR, help="intermediates")
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild in a temporary copy and compare with --out instead of writing",
    )
    args = parser.parse_args(argv)

    problem = toolchain_problem()
    if problem:
        print(f"build.py: {problem}", file=sys.stderr)
        return 2
    try:
        if args.check:
            problems = check_reproducible(FIRMWARE_DIR, args.out)
            for p in problems:
                print(f"build.py: {p}", file=sys.stderr)
            if not problems:
                print(f"build.py: {len(guest_names())} guest(s) reproduced exactly")
            return 1 if problems else 0
        manifest = build(FIRMWARE_DIR, args.out, args.build_dir)
    except RuntimeError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    for entry in manifest:
        image = args.out / f"{entry['name']}.elf"
        print(f"{entry['name']:12} {entry['elf_sha256'][:16]}  {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
