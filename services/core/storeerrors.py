"""The artifact store's errors, apart from its ``minio`` client (:mod:`selfimprove.core.store`), so
code that only names them (catches a missing record, refuses a bad reference) stays free of I/O."""

from __future__ import annotations


class ArtifactError(Exception):
    """Base class of artifact store errors."""


class ArtifactNotFoundError(ArtifactError):
    """No object at the key or reference asked for."""


class ArtifactIntegrityError(ArtifactError):
    """The stored bytes do not match the reference or manifest."""
