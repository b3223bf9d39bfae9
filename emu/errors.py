"""The root of every error the emulator reports to a user.

Each layer defines its own small hierarchy under :class:`EmuError`; the CLI
turns any of them into one line on stderr and a non-zero exit status.
"""


class EmuError(Exception):
    """An error with a message fit to show a user as one line."""

    exit_status = 1
