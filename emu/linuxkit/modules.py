"""A kernel module and everything it needs, in load order, from ``modules.dep``.

``modules.dep`` (written by depmod) maps each module file to the files it needs,
from symbol references: those are hard dependencies, loaded first. A module's
soft dependencies (``modules.softdep``, ``pre:``/``post:``) name modules or
aliases (``crypto-crc32c``) that ``modules.alias`` turns into modules; modprobe
loads them too but carries on when they fail (one may need a CPU feature, like
``crc32c_intel``), so they are marked optional.
"""

from __future__ import annotations

import gzip
import lzma
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from emu.linuxkit.material import MaterialError


@dataclass(frozen=True)
class Module:
    """One module to insmod: its name, its file in the tree, and whether it may fail."""

    name: str
    path: Path
    optional: bool = False

    def image(self) -> bytes:
        """The module's ELF, decompressed when the tree ships it compressed."""
        return decompress(self.path)


def module_name(path: str) -> str:
    """``kernel/drivers/ata/libata.ko.xz`` -> ``libata`` (``-`` and ``_`` are one to
    the kernel; names keep ``_``)."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def decompress(path: Path) -> bytes:
    """A ``.ko``, ``.ko.xz`` or ``.ko.gz`` file's ELF; MaterialError for others."""
    data = path.read_bytes()
    if path.name.endswith(".ko"):
        return data
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    raise MaterialError(f"{path}: compressed in a way this tool cannot unpack")


class ModuleTree:
    """The modules of one kernel release (``/lib/modules/RELEASE``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, str] = {}  # name -> path relative to root
        self.deps: dict[str, list[str]] = {}  # name -> names of its hard dependencies
        try:
            dep_text = (root / "modules.dep").read_text()
        except OSError as exc:
            raise MaterialError(f"{root}/modules.dep: {exc.strerror} (run depmod)") from None
        for line in dep_text.splitlines():
            target, sep, needs = line.partition(":")
            if not sep:
                continue
            name = module_name(target)
            self.files[name] = target.strip()
            self.deps[name] = [module_name(p) for p in needs.split()]
        self.softdeps = _read_softdeps(root / "modules.softdep")
        self.aliases = _read_aliases(root / "modules.alias")

    def resolve(self, wanted: Iterable[str]) -> list[Module]:
        """``wanted`` and what each needs, each once, every module after its needs.

        A wanted name that is no module of this kernel raises MaterialError, unless
        the kernel has it built in (then there is nothing to load)."""
        order: list[Module] = []
        placed: dict[str, Module] = {}
        visiting: set[str] = set()

        def visit(name: str, optional: bool) -> None:
            if name in placed:
                if not optional and placed[name].optional:  # now needed for real
                    index = order.index(placed[name])
                    order[index] = placed[name] = Module(name, placed[name].path, False)
                return
            if name in visiting:
                return  # a softdep loop (pre: of a post:); the hard graph has none
            visiting.add(name)
            pre, post = self.softdeps.get(name, ((), ()))
            for soft in pre:
                for target in self._candidates(soft):
                    visit(target, True)
            for dep in self.deps[name]:
                visit(dep, optional)
            module = Module(name, self.root / self.files[name], optional)
            placed[name] = module
            order.append(module)
            for soft in post:
                for target in self._candidates(soft):
                    visit(target, True)
            visiting.discard(name)

        for want in wanted:
            name = want.replace("-", "_")
            if name in self.files:
                visit(name, False)
            elif not self.builtin(name):
                raise MaterialError(f"kernel {self.root.name} has no module {want}")
        return order

    def builtin(self, name: str) -> bool:
        try:
            text = (self.root / "modules.builtin").read_text()
        except OSError:
            return False
        return any(module_name(line) == name for line in text.split())

    def _candidates(self, soft: str) -> list[str]:
        """Modules a softdep names: the module itself, else those its alias maps to."""
        name = soft.replace("-", "_")
        if name in self.files:
            return [name]
        return [m for m in self.aliases.get(soft, []) if m in self.files]


def _read_softdeps(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """``softdep NAME pre: A B post: C`` lines -> name -> (pre, post)."""
    result: dict[str, tuple[list[str], list[str]]] = {}
    try:
        text = path.read_text()
    except OSError:
        return result
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "softdep":
            continue
        pre: list[str] = []
        post: list[str] = []
        bucket = pre
        for word in words[2:]:
            if word in ("pre:", "post:"):
                bucket = pre if word == "pre:" else post
            else:
                bucket.append(word)
        result[words[1].replace("-", "_")] = (pre, post)
    return result


_ALIAS = re.compile(r"^alias\s+(\S+)\s+(\S+)\s*$")


def _read_aliases(path: Path) -> dict[str, list[str]]:
    """``alias PATTERN MODULE`` lines, exact patterns only (softdeps name no wildcard)."""
    result: dict[str, list[str]] = {}
    try:
        text = path.read_text()
    except OSError:
        return result
    for line in text.splitlines():
        m = _ALIAS.match(line)
        if m and not any(c in m.group(1) for c in "*?["):
            result.setdefault(m.group(1), []).append(m.group(2).replace("-", "_"))
    return result
