"""Debian's kernel and busybox for Linux guests, fetched with apt into a cache folder.

``fetch`` asks apt which kernel ``linux-image-amd64`` depends on today (never a
hard-coded version), downloads it and ``busybox-static`` with ``apt-get download``,
unpacks each with ``dpkg-deb -x`` and runs ``depmod -b`` on the kernel's modules
(the package leaves ``modules.dep`` to its install script). A package version
already unpacked is not fetched again; versions no longer current are deleted.
``material.json`` in the cache names what is current; :func:`load` reads only
that, with no apt and no network.

The cache folder is ``$AHCI_EMU_LINUX_DIR``, else ``$XDG_CACHE_HOME/ahci-emu/linux``,
else ``~/.cache/ahci-emu/linux``. Everything in it belongs to this module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emu.errors import EmuError

ENV = "AHCI_EMU_LINUX_DIR"
KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
MANIFEST = "material.json"
_DONE = ".unpacked"  # written last into a package folder: it is whole


class MaterialError(EmuError):
    """The Linux material cannot be fetched or is not there."""


@dataclass(frozen=True)
class Material:
    """An unpacked kernel and busybox: what a Linux guest boots."""

    release: str  # the kernel release, e.g. 6.1.0-57-amd64 (uname -r)
    kernel: Path  # the bzImage
    modules: Path  # /lib/modules/RELEASE of the package
    busybox: Path  # the static busybox binary
    packages: tuple[str, ...]  # name=version of each package it came from

    def describe(self) -> str:
        return (
            f"kernel {self.release}: {self.kernel}\nmodules: {self.modules}\n"
            f"busybox: {self.busybox}\npackages: {', '.join(self.packages)}"
        )


def cache_dir() -> Path:
    """Where the material lives (see the module doc)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ahci-emu" / "linux"


def load(cache: Path | None = None) -> Material:
    """The material ``fetch`` last made current; MaterialError if there is none."""
    cache = cache or cache_dir()
    manifest = cache / MANIFEST
    try:
        data = json.loads(manifest.read_text())
        material = Material(
            release=data["release"],
            kernel=cache / data["kernel"],
            modules=cache / data["modules"],
            busybox=cache / data["busybox"],
            packages=tuple(data["packages"]),
        )
    except FileNotFoundError:
        raise MaterialError(
            f"no Linux material in {cache}: run `ahci-emu linux fetch` (needs apt)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MaterialError(f"{manifest}: unreadable ({exc}): run `ahci-emu linux fetch`") from None
    for path in (material.kernel, material.modules / "modules.dep", material.busybox):
        if not path.exists():
            raise MaterialError(f"{path} is missing: run `ahci-emu linux fetch` again")
    return material


def fetch(cache: Path | None = None, log: Callable[[str], None] = print) -> Material:
    """Make the current kernel and busybox available in ``cache``; returns them."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    kernel_pkg = current_kernel_package()
    release = kernel_pkg.removeprefix("linux-image-")
    kernel_dir = _unpacked(cache, kernel_pkg, log, lambda root: _depmod(root, release))
    busybox_dir = _unpacked(cache, BUSYBOX, log, None)
    material = Material(
        release=release,
        kernel=kernel_dir / "boot" / f"vmlinuz-{release}",
        modules=kernel_dir / "lib" / "modules" / release,
        busybox=busybox_dir / "bin" / "busybox",
        packages=(kernel_dir.name, busybox_dir.name),
    )
    record = {
        "release": release,
        "kernel": str(material.kernel.relative_to(cache)),
        "modules": str(material.modules.relative_to(cache)),
        "busybox": str(material.busybox.relative_to(cache)),
        "packages": list(material.packages),
    }
    tmp = cache / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(cache / MANIFEST)
    _prune(cache, {kernel_dir, busybox_dir}, log)
    return load(cache)


def _prune(cache: Path, keep: set[Path], log: Callable[[str], None]) -> None:
    """Delete the packages an earlier fetch unpacked that are no longer current."""
    for folder in cache.glob("*_*"):
        if folder not in keep and (folder / _DONE).is_file():
            log(f"{folder.name}: no longer current, deleted")
            shutil.rmtree(folder)


def current_kernel_package() -> str:
    """The ``linux-image-*`` package ``linux-image-amd64`` depends on, as apt knows it."""
    out = _apt(["apt-cache", "depends", KERNEL_META])
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Depends" and value.strip().startswith("linux-image-"):
            return value.strip()
    raise MaterialError(f"apt-cache depends {KERNEL_META}: names no linux-image package")


def candidate_version(package: str) -> str:
    """The version ``apt-get download PACKAGE`` fetches."""
    out = _apt(["apt-cache", "policy", package])
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate" and value.strip() not in ("", "(none)"):
            return value.strip()
    raise MaterialError(f"apt knows no version of {package}: run `apt-get update` first")


def _unpacked(
    cache: Path, package: str, log: Callable[[str], None], finish: Callable[[Path], None] | None
) -> Path:
    """``cache/PACKAGE_VERSION``, downloaded and unpacked unless it already is."""
    version = candidate_version(package)
    target = cache / f"{package}_{version.replace(':', '%3a')}"  # as apt names the .deb
    if (target / _DONE).exists():
        log(f"{package} {version}: already in {target}")
        return target
    log(f"{package} {version}: downloading into {target}")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        work = Path(tmp)
        _apt(["apt-get", "download", "-q", f"{package}={version}"], cwd=work)
        debs = sorted(work.glob("*.deb"))
        if len(debs) != 1:
            raise MaterialError(f"apt-get download {package}: expected one .deb, got {len(debs)}")
        root = work / "root"
        _apt(["dpkg-deb", "-x", str(debs[0]), str(root)])
        if finish is not None:
            finish(root)
        (root / _DONE).write_text(f"{package}={version}\n")
        if target.exists():  # an earlier fetch stopped half-way
            shutil.rmtree(target)
        root.rename(target)
    return target


def _depmod(root: Path, release: str) -> None:
    """Write modules.dep and friends for the unpacked kernel (its postinst would)."""
    if not (root / "lib" / "modules" / release).is_dir():
        raise MaterialError(f"the kernel package has no lib/modules/{release}")
    depmod = shutil.which("depmod") or next(
        (p for p in ("/usr/sbin/depmod", "/sbin/depmod") if os.access(p, os.X_OK)), None
    )
    if depmod is None:
        raise MaterialError("depmod not found: install kmod (apt-get install kmod)")
    _apt([depmod, "-b", str(root), release])


def _apt(argv: list[str], cwd: Path | None = None) -> str:
    """Run one apt/dpkg tool; its first error line becomes a MaterialError."""
    if shutil.which(argv[0]) is None and not os.access(argv[0], os.X_OK):
        raise MaterialError(f"{argv[0]} not found: Linux material comes from Debian's packages")
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("E:")] or [
            ln for ln in proc.stderr.splitlines() if ln.strip()
        ]
        why = errors[0].removeprefix("E:").strip() if errors else f"exit {proc.returncode}"
        raise MaterialError(f"{' '.join(argv[:2])}: {why}")
    return proc.stdout
