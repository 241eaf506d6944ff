"""The server-info file: how `rollouts generate --server-info FILE` finds a running server.

Written atomically by `rollouts serve` once the server is ready (so a reader never sees half a file
or a server that cannot answer yet) and removed when it stops.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollouts.errors import UserInputError
from rollouts.io import write_json_atomic

if TYPE_CHECKING:
    from server.vllm import ManagedServer


@dataclass(frozen=True, kw_only=True)
class ServerInfo:
    """What a client needs to use a running server, and what helps find it again."""

    base_url: str
    model: str
    pid: int
    tp: int = 1
    dp: int = 1
    started_at: str = ""
    log_file: str = ""
    hostname: str = ""


_REQUIRED = {"base_url": str, "model": str, "pid": int}
_OPTIONAL = {"tp": int, "dp": int, "started_at": str, "log_file": str, "hostname": str}


def server_info(server: ManagedServer) -> ServerInfo:
    if server.pid is None or server.started_at is None:
        raise RuntimeError("the server has not been started")
    started = datetime.fromtimestamp(server.started_at, tz=UTC)
    return ServerInfo(
        base_url=server.base_url,
        model=server.model,
        pid=server.pid,
        tp=server.config.tensor_parallel_size,
        dp=server.config.data_parallel_size,
        started_at=started.isoformat(timespec="seconds"),
        log_file=str(server.log_file or ""),
        hostname=socket.gethostname(),
    )


def write_server_info(path: str | Path, server: ManagedServer) -> ServerInfo:
    """Write the info JSON of a ready server atomically and return what was written."""
    info = server_info(server)
    write_json_atomic(asdict(info), path)
    return info


def remove_server_info(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()


def read_server_info(path: str | Path) -> ServerInfo:
    """Load an info file written by `rollouts serve`; UserInputError naming the problem otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(
            f"{path}: no server info file; is `rollouts serve --info-file {path}` running "
            "and ready?"
        ) from None
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read server info file ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{path}: not a server info file (invalid JSON: {exc.msg})") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: not a server info file (expected a JSON object)")
    return ServerInfo(**_checked_fields(path, data))


def _checked_fields(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise UserInputError(f"{path}: server info file lacks {', '.join(missing)}")
    fields: dict[str, Any] = {}
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserInputError(
                f"{path}: server info field {key!r} should be {kind.__name__}, got {value!r}"
            )
        fields[key] = value
    if not fields["base_url"].startswith(("http://", "https://")):
        raise UserInputError(f"{path}: base_url {fields['base_url']!r} is not an http(s) URL")
    return fields
