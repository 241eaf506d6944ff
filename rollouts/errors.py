"""Exceptions of the whole project, in one tree.

RolloutsError
├── UserInputError      bad input, options or config: one line naming the problem and the fix,
│                       raised before any work is spent. The CLIs turn it into exit status 1.
├── OutputConflictError the output path holds another run's data, or another writer holds it.
├── ServerUnavailable   no server answered (after a bounded wait) or every server is gone.
├── ServerStartError    a managed server exited early, printed a fatal line or missed its deadline.
└── StorageError        the write-ahead log or a part could not be written (disk full, ...).

One failed request is not an exception of this tree: it becomes an error row and the run goes on.
"""

from __future__ import annotations


class RolloutsError(Exception):
    """Base of every error this project raises on purpose."""


class UserInputError(RolloutsError):
    """Bad input, options or configuration, found before any work is spent."""


class OutputConflictError(RolloutsError):
    """The output already holds another run's data, or another process is writing it."""


class ServerUnavailable(RolloutsError):
    """No inference server can be reached."""


class ServerStartError(RolloutsError):
    """A managed inference server failed to become ready."""


class StorageError(RolloutsError):
    """Rollouts could not be written to disk; what was written before is kept."""
