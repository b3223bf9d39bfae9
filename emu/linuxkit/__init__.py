"""Linux test material: Debian's stock kernel, busybox and a test initramfs.

- :mod:`emu.linuxkit.material`: fetch ``linux-image-amd64``'s kernel and
  ``busybox-static`` with apt into a cache folder, and find them there again.
- :mod:`emu.linuxkit.modules`: a kernel module and everything it needs, in load
  order, resolved from the kernel's ``modules.dep`` (and ``modules.softdep``).
- :mod:`emu.linuxkit.cpio`: the newc cpio format the kernel unpacks as initramfs.
- :mod:`emu.linuxkit.initramfs`: the test initramfs: busybox, modules, ``/init``
  that loads them, runs a script, prints dmesg and ends the run through port 0xF4.
- :mod:`emu.linuxkit.transcript`: the parts of a boot's serial output.

Only the standard library is used, so ``python3 -m emu.cli linux fetch`` works from
a checkout before anything is installed.
"""
