"""Why a run stopped abnormally, with the exit status `ahci-emu run` gives for each."""

from emu.errors import EmuError, RunStop


class MachineError(EmuError):
    """The board cannot be built or the guest cannot be loaded (exit status 1)."""


class LoadError(MachineError):
    """The guest file is not a loadable multiboot ELF32."""


__all__ = [
    "GuestFault",
    "GuestTimeout",
    "Interrupted",
    "LoadError",
    "MachineError",
    "RunStop",
    "StrayAccess",
]


class GuestTimeout(RunStop):
    exit_status = 124


class StrayAccess(RunStop):
    """An access to an address or port nothing decodes, under --strict."""

    exit_status = 125


class GuestFault(RunStop):
    """A CPU exception the guest did not handle, or a halt it cannot leave."""

    exit_status = 126


class KernelPanic(RunStop):
    """The Linux guest panicked (its console printed the end-of-panic line)."""

    exit_status = 123


class Interrupted(RunStop):
    """Ctrl-C (SIGINT) or SIGTERM."""

    exit_status = 130
