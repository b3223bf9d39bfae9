"""The disk as ATA sees it: command set, IDENTIFY data, errors.

It knows nothing of AHCI: a host adapter hands it a :class:`TaskFile` and the
data buffers, and gets back a :class:`Completion`.
"""
