"""The ``small_disk`` fixture (a real tmpfs; root) for the disk-fault tests here."""

from tests.runtime.disk import small_disk

__all__ = ["small_disk"]
