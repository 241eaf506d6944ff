"""Helpers shared by the click commands: error conversion and common option bundles."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rollouts.errors import RolloutsError

F = TypeVar("F", bound=Callable[..., Any])
# A run that finished but left some rows failed (generate: requests; score: reward functions).
EXIT_WITH_ERROR_ROWS = 3


def handle_errors(func: F) -> F:
    """Turn the project's own errors into one-line click errors (exit status 1).

    Under pytest (ROLLOUTS_RAISE=1) they propagate so tests see the real exception.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RolloutsError as exc:
            if os.environ.get("ROLLOUTS_RAISE") == "1":
                raise
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def echo_err(message: str) -> None:
    """Diagnostics go to stderr; results go to stdout."""
    click.echo(message, err=True)


def is_interactive() -> bool:
    return sys.stderr.isatty()
