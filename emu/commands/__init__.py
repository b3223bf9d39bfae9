"""Sub-commands of `ahci-emu`, one module each, registered by emu.cli."""
