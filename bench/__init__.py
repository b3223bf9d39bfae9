"""Benchmarks of ahci-emu side by side with QEMU q35 (TCG), on the same guest and disk image.

Run them with ``python -m bench`` (see ``bench/__main__.py``, ``--help``). The
measurement method, the workloads and the targets are described in
``bench/workloads.py``; the machines (how each one is started) in
``bench/machines.py``.
"""
