"""The server-info file: how `rollouts generate --server-info FILE` finds a running server.

Written atomically by `rollouts serve` once the server is ready (so a reader never sees half a file
or a server that cannot answer yet) and removed when it stops. With replicas (`--replicas N`) one
file names every replica: `base_urls` and `pids`, the first of each also as `base_url` and `pid`.

This module knows only the file; server.vllm builds a ServerInfo from a running server.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import write_json_atomic


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
    # Sequences the server runs at once at most (vLLM's --max-num-seqs per data-parallel engine),
    # when known: where `--max-concurrent auto` sets its limit.
    max_num_seqs: int | None = None
    # Every replica when several serve the model on one GPU (`rollouts serve --replicas N`).
    base_urls: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()

    def urls(self) -> list[str]:
        """The base URL of every replica (the one server's when there is one)."""
        return list(self.base_urls) or [self.base_url]


_REQUIRED = {"base_url": str, "model": str, "pid": int}
_OPTIONAL = {"tp": int, "dp": int, "started_at": str, "log_file": str, "hostname": str,
             "max_num_seqs": int}
_LISTS = {"base_urls": str, "pids": int}


def write_server_info(path: str | Path, info: ServerInfo) -> ServerInfo:
    """Write the info JSON of a ready server atomically and return what was written."""
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
        if key not in data or (key in _OPTIONAL and data[key] is None):
            continue
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserInputError(
                f"{path}: server info field {key!r} should be {kind.__name__}, got {value!r}"
            )
        fields[key] = value
    for key, kind in _LISTS.items():
        values = data.get(key) or []
        if not isinstance(values, list) or not all(
            isinstance(v, kind) and not isinstance(v, bool) for v in values
        ):
            raise UserInputError(
                f"{path}: server info field {key!r} should be a list of {kind.__name__}"
            )
        fields[key] = tuple(values)
    for url in [fields["base_url"], *fields["base_urls"]]:
        if not url.startswith(("http://", "https://")):
            raise UserInputError(f"{path}: base_url {url!r} is not an http(s) URL")
    return fields
