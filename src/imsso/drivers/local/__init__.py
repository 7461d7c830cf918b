"""The local driver: each unit a real process on this machine, on its own loopback address."""

from .driver import LocalDriver

__all__ = ["LocalDriver"]
