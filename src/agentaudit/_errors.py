"""The exceptions agentaudit raises at its API boundary.

Hooks never raise them at an agent (faults are swallowed and counted); they reach
callers who construct bad values or ask a store for something it cannot do.
"""

from __future__ import annotations

__all__ = [
    "AgentAuditError",
    "CheckpointError",
    "CommitTimeout",
    "RetentionError",
    "RunNotFoundError",
    "SchemaVersionError",
    "StoreError",
]


class AgentAuditError(Exception):
    """Base class of every exception agentaudit raises on purpose."""


class StoreError(AgentAuditError):
    """A store could not do what was asked (closed, unreachable, corrupt)."""


class CommitTimeout(StoreError, TimeoutError):
    """A store took an item but could not make it durable in the time its caller
    waited. The item stays queued and lands when the store can write: a Writer that
    gets this for an event counts a fault and goes on from that event."""


class SchemaVersionError(StoreError):
    """A database was written by a newer agentaudit than this one."""


class RunNotFoundError(AgentAuditError, KeyError):
    """No run has the given id (or a given id prefix matched none, or several)."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the sentence
        return str(self.args[0]) if self.args else "run not found"


class CheckpointError(AgentAuditError, ValueError):
    """A checkpoint, signed note, key, proof or bundle is malformed or does not
    verify (or a signing key cannot be used)."""


class RetentionError(StoreError):
    """A purge or delete was refused: the run is under a legal hold, or younger
    than the database's retention floor. Nothing was deleted."""
