"""The driver sanitizer (``--sanitize``): AHCI rules a guest's driver must keep."""
