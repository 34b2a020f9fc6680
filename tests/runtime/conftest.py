"""The ``small_disk`` (a real tmpfs) and ``ext4_disk`` (a loop-mounted ext4) fixtures
(root) for the disk-fault tests here."""

from tests.runtime.disk import ext4_disk, small_disk

__all__ = ["ext4_disk", "small_disk"]
