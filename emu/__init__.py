"""ahci-emu: an emulated AHCI/SATA controller for small x86 guests under Unicorn."""

__version__ = "0.1.0"
