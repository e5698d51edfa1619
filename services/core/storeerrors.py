"""The artifact store's errors, apart from its ``minio`` client (:mod:`selfimprove.core.store`), so
code that only names them (catches a missing record, refuses a bad reference) stays free of I/O."""

from __future__ import annotations

from selfimprove.core.retry import RetryableError


class ArtifactError(Exception):
    """Base class of artifact store errors."""


class ArtifactNotFoundError(ArtifactError):
    """No object at the key or reference asked for."""


class ArtifactIntegrityError(ArtifactError):
    """The stored bytes do not match the reference or manifest."""


class StoreUnavailableError(RetryableError):
    """The object store could not be reached, or answered "try later" (refused or reset connection,
    timeout, HTTP 5xx): an outage of the store, not a fault of the data asked for.

    Deliberately not an :class:`ArtifactError`: services answer those with a final ``StageFailure``,
    while this one is waited out (the consumer retries the message until the store is back, without
    dead-lettering or committing it)."""
