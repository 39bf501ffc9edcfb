"""Exceptions raised by c2np.

Every error a user can trigger with bad input derives from :class:`C2NPError`, so the
CLI can print it as one clear line instead of a traceback.
"""

from __future__ import annotations


class C2NPError(Exception):
    """Base class for every error caused by input, configuration or stored data."""


class InvalidStructureError(C2NPError):
    """A unit cell (CIF file or in-memory structure) cannot be used."""


class ConfigError(C2NPError):
    """A build configuration is malformed or inconsistent."""


class CarveError(C2NPError):
    """A particle cannot be carved with the requested parameters."""


class StoreError(C2NPError):
    """A dataset store is missing, incomplete, built differently, or altered."""


class UnknownMaterialError(C2NPError, KeyError):
    """A material name is not in the catalogue or store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown material"
