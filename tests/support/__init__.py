"""Helpers shared by the guest and oracle tests (disk images with known contents)."""
