"""The root of every error the emulator reports to a user.

Each layer defines its own small hierarchy under :class:`EmuError`; the CLI
turns any of them into one line on stderr and a non-zero exit status.
"""


class EmuError(Exception):
    """An error with a message fit to show a user as one line."""

    exit_status = 1


class RunStop(EmuError):
    """The guest's run ended abnormally; ``exit_status`` says how. A device may raise one
    from inside a guest access to end the run at once (the board reports it)."""
