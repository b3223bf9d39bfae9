"""The argument parser every `ahci-emu` command uses: argparse, with its errors on one line."""

import argparse
from typing import NoReturn

USAGE_ERROR = 2  # argparse's status for a bad option or option value


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose refusals are one line on stderr (status 2), in the form of
    every other ahci-emu error, pointing at ``--help`` instead of printing the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"ahci-emu: error: {message} (see '{self.prog} --help')\n")
