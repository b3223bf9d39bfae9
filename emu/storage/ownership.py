"""Which files the tool may create, delete or overwrite: the ownership rules in one place.

A machine owns only the differencing images it made. The tool creates or
deletes a file under a machine folder only when the file

- is ``DIR/Snapshots/{UUID}.vdi``, where ``DIR/Snapshots`` is a real directory
  (not a symlink) and the file itself is a regular file, not a symlink: its
  real path is inside that machine's own ``Snapshots/``;
- is a VDI whose uuidCreate is that UUID; and
- has a UUID the machine's registry holds: a registered differencing image
  (``media``) or one the last change dropped or was creating (``discard``).

A ``.new-{UUID}.vdi`` beside it is the same diff while it is being written; the
rule is the same except that it may not be a whole VDI yet. Anything else is
refused with the reason; base images are the user's and are never deleted.

Outputs (``--serial``, ``--trace``, ``image create``/``convert`` destinations)
go through :func:`check_output`: the tool never overwrites an image that is
open (every open image holds an ``flock``), a VDI, or a file of a machine
(its ``machine.json``, anything in its ``Snapshots/``, a medium it registers).
"""

import fcntl
import os
import re
import stat
from uuid import UUID

from emu.storage.detect import looks_like_vdi
from emu.storage.errors import MachineError, StorageError

SNAPSHOTS = "Snapshots"
MACHINE_FILE = "machine.json"
_UUID = r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
_DIFF_NAME = re.compile(rf"^(?P<temp>\.new-)?\{{(?P<uuid>{_UUID})\}}\.vdi$")


class OwnershipError(MachineError):
    """The tool was about to create or delete a file that is not the machine's own."""


class OutputRefusedError(StorageError):
    """An output file names an image or a machine's file; nothing was written."""


def diff_path(medium: UUID) -> str:
    """Where a machine keeps its differencing image ``medium``, relative to the folder."""
    return os.path.join(SNAPSHOTS, f"{{{medium}}}.vdi")


class MachineFiles:
    """The files of one machine folder that the tool may create and delete."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.realpath(folder)
        self.snapshots = os.path.join(self.folder, SNAPSHOTS)

    def path(self, rel: str) -> str:
        """A registry path (relative to the folder, or absolute) as an absolute path."""
        return os.path.normpath(os.path.join(self.folder, rel))

    def snapshots_folder(self) -> str:
        """``Snapshots/``, made if missing; refused if it is not a real folder of this machine."""
        try:
            os.mkdir(self.snapshots)
        except FileExistsError:
            pass
        except OSError as exc:
            raise MachineError(f"{self.snapshots}: cannot create: {exc.strerror}") from None
        self._check_snapshots_folder()
        return self.snapshots

    def new_diff(self, medium: UUID) -> tuple[str, str]:
        """(temporary, final) paths of a diff about to be created; both must be free."""
        final = self.path(diff_path(medium))
        temp = os.path.join(os.path.dirname(final), f".new-{os.path.basename(final)}")
        for path in (temp, final):
            if os.path.lexists(path):
                raise OwnershipError(f"{path}: already exists; refusing to overwrite it")
        return temp, final

    def deletable(self, medium: UUID, rel: str, *, partial: bool = False) -> str:
        """The absolute path of diff ``medium`` at ``rel``, once every rule allows deleting it.

        ``partial`` allows a ``.new-`` file that may not hold a whole VDI yet.
        """
        path = self.path(rel)
        why = self._not_owned(medium, path, partial)
        if why:
            raise OwnershipError(f"{path}: not deleted: {why}")
        return path

    def leftovers(self, discard: list[UUID]) -> list[str]:
        """Files of discarded diffs still present (an interrupted change) that the rules
        let the machine delete; anything else found under their names is left alone."""
        found = []
        for medium in discard:
            final = self.path(diff_path(medium))
            temp = os.path.join(self.snapshots, f".new-{os.path.basename(final)}")
            for path, partial in ((final, False), (temp, True)):
                if os.path.lexists(path) and self._not_owned(medium, path, partial) is None:
                    found.append(path)
        return found

    def rename(self, temp: str, final: str) -> None:
        """Give a diff written under its temporary name its final name."""
        try:
            os.rename(temp, final)
        except OSError as exc:
            raise MachineError(f"{final}: cannot create: {exc.strerror}") from None

    def remove(self, path: str) -> None:
        """Delete a file the rules allowed, or that this change created (gone is fine)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise MachineError(f"{path}: cannot delete: {exc.strerror}") from None

    def _check_snapshots_folder(self) -> None:
        try:
            mode = os.lstat(self.snapshots).st_mode
        except OSError as exc:
            raise OwnershipError(f"{self.snapshots}: {exc.strerror}") from None
        if stat.S_ISLNK(mode):
            target = os.path.realpath(self.snapshots)
            raise OwnershipError(
                f"{self.snapshots}: is a symlink to {target}; a machine creates and deletes "
                "diffs only in a Snapshots folder of its own"
            )
        if not stat.S_ISDIR(mode):
            raise OwnershipError(f"{self.snapshots}: not a folder")

    def _not_owned(self, medium: UUID, path: str, partial: bool) -> str | None:
        """Why ``path`` is not diff ``medium`` of this machine, or None when it is."""
        match = _DIFF_NAME.match(os.path.basename(path))
        if (
            os.path.dirname(path) != self.snapshots
            or match is None
            or UUID(match["uuid"]) != medium
            or bool(match["temp"]) != partial
        ):
            return f"not {diff_path(medium)} of machine {self.folder}"
        try:
            self._check_snapshots_folder()
        except OwnershipError as exc:
            return str(exc).split(": ", 1)[1]
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None  # nothing to delete
        except OSError as exc:
            return exc.strerror
        if stat.S_ISLNK(mode):
            return f"a symlink (to {os.path.realpath(path)}), not the machine's own file"
        if not stat.S_ISREG(mode):
            return "not a regular file"
        from emu.storage.vdi import read_uuids  # kept out of check_output's imports

        if not partial and read_uuids(path)[0] != medium:
            return f"not a VDI with the UUID {medium}"
        return None


def check_output(path: str, what: str) -> None:
    """Refuse ``path`` as the output ``what`` (an option or command) if writing it could
    destroy an image or a machine's file (module doc). Opens nothing for writing."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputRefusedError(f"{what} {path}: {exc.strerror}") from None
    why = _machine_role(real)
    if why is None and st is not None and stat.S_ISREG(st.st_mode):
        why = _image_role(real)
    if why:
        raise OutputRefusedError(f"{what} {path}: refusing to overwrite {why}")


def _image_role(path: str) -> str | None:
    """Why an existing regular file is an image not to overwrite, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None  # opening it for writing will report the problem
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "an image in use (locked by this or another run)"
        fcntl.flock(fd, fcntl.LOCK_UN)
        if looks_like_vdi(os.pread(fd, 68, 0)):
            return "a VDI image"
    finally:
        os.close(fd)
    return None


def _machine_role(path: str) -> str | None:
    """Why ``path`` (a real path) belongs to a machine folder, or None.

    A machine's files: its machine.json (and the temporary file of its commit),
    anything in its Snapshots/, and the media registered by a machine folder in
    the same directory as ``path`` (where README's layout keeps base images).
    """
    folder, name = os.path.split(path)
    if name.startswith(MACHINE_FILE) and _is_machine(folder):
        return f"the machine file of {folder}"
    parent, sub = os.path.split(folder)
    if sub == SNAPSHOTS and _is_machine(parent):
        return f"a file in the Snapshots folder of machine {parent}"
    for machine in _machines_in(folder):
        if path in _registered_paths(machine):
            return f"a medium of machine {machine}"
    return None


def _is_machine(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, MACHINE_FILE))


def _machines_in(folder: str) -> list[str]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return [e.path for e in entries if e.is_dir() and _is_machine(e.path)]


def _registered_paths(machine: str) -> set[str]:
    """Real paths of a machine's registered media; a damaged machine file names none."""
    from emu.storage import machine_file  # it imports this module for diff_path

    try:
        config = machine_file.read(machine)
    except machine_file.MachineFileError:
        return set()
    return {os.path.realpath(os.path.join(machine, r.path)) for r in config.media.values()}
