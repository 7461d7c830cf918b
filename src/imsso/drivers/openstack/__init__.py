"""The openstack driver: each instance is a Heat stack in its tenant's project."""

from .driver import OpenStackDriver
from .heat import Credentials

__all__ = ["Credentials", "OpenStackDriver"]
