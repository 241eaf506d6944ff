"""User reward functions with verl's signature, unchanged.

Where a function comes from (`--reward-fn`):
  - `path/to/file.py:func` (`file.py` alone means `compute_score`). A file inside a package (an
    `__init__.py` beside it) is imported as part of its package, so its relative imports work; a
    lone file is imported with its directory on sys.path, so it can import its neighbours.
  - `pkg.module:func`: an importable module, e.g. `verl.utils.reward_score:default_compute_score`.

How it is called: exactly as verl's reward managers call it, by keyword:
`func(data_source=..., solution_str=..., ground_truth=..., extra_info=...)`, where extra_info is the
row's `extra_info` (an empty dict when the row has none). It returns a number (or bool) or a dict
with `score` (and optionally `acc`, `pred`; other keys become columns). A verdict counts as a pass
(`acc`) when the dict says so, else when the score reaches the run's pass threshold (`score
--pass-threshold`, default 1.0): with verl's +1/-1 rewards, or 0.1 for a well-formed wrong answer,
`score > 0` is no accuracy.

The version (part of every cached verdict's key) is a digest of the function's file and of the
Python sources it can import from its own directory or package: editing a helper module makes the
old verdicts unreachable. When that set cannot be known (a directory or package with more than
MAX_DEPENDENCY_FILES Python files or MAX_DEPENDENCY_DIRS directories), the digest covers the modules loaded at import time and `cache_note`
says so.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import to_python
from scoring.rewards.base import DEFAULT_PASS_THRESHOLD
from scoring.rewards.extract import Extraction
from scoring.rewards.ifeval_data import offer_nltk_data
from scoring.tracebacks import describe_exception
from scoring.types import RewardResult

CustomFn = Callable[..., Any]
DEFAULT_FUNCTION = "compute_score"
# Above this many Python files under a function's directory or package, only the modules actually
# loaded from it are hashed into the version.
MAX_DEPENDENCY_FILES = 500
MAX_DEPENDENCY_DIRS = 2000
_SKIPPED_DIRS = {"__pycache__", "site-packages", "node_modules", "dist-packages"}
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
SPEC_FORMS = "PATH.py[:FUNC] or package.module:FUNC"


@dataclass(frozen=True)
class CustomSpec:
    """A file path or a dotted module name, and the function's name in it."""

    function: str
    path: Path | None = None
    module: str | None = None

    def __str__(self) -> str:
        return f"{self.path if self.path is not None else self.module}:{self.function}"


def looks_custom(spec: str) -> bool:
    """A spec that is not a built-in name: a file path or a `module:func`."""
    return ".py" in spec or ":" in spec or "/" in spec or os.sep in spec


def parse_spec(spec: str) -> CustomSpec:
    head, sep, func = spec.rpartition(":")
    if not sep:
        head, func = spec, DEFAULT_FUNCTION
    func = func or DEFAULT_FUNCTION
    if not func.isidentifier():
        raise UserInputError(f"--reward-fn {spec}: {func!r} is not a function name; use {SPEC_FORMS}")
    if head.endswith(".py") or "/" in head or os.sep in head:
        return CustomSpec(func, path=Path(head))
    if _DOTTED.fullmatch(head):
        return CustomSpec(func, module=head)
    raise UserInputError(f"--reward-fn {spec}: expected a built-in name, {SPEC_FORMS}")


def canonical_spec(spec: str) -> str:
    """Files by absolute path: workers may run in another directory."""
    parsed = parse_spec(spec)
    if parsed.path is not None:
        return f"{parsed.path.resolve()}:{parsed.function}"
    return str(parsed)


# ---------------------------------------------------------------- loading


def package_root(path: Path) -> Path | None:
    """The top package directory holding `path` (None for a file outside any package)."""
    top = None
    directory = path.parent
    while (directory / "__init__.py").is_file():
        top = directory
        directory = directory.parent
    return top


def load_module(spec: CustomSpec) -> ModuleType:
    if spec.module is not None:
        return _import(spec.module, spec.module)
    assert spec.path is not None
    path = spec.path.resolve()
    if not path.is_file():
        raise UserInputError(f"{spec.path}: no such reward file; check the --reward-fn path")
    top = package_root(path)
    if top is None:
        return _load_lone_file(path)
    name = ".".join(path.relative_to(top.parent).with_suffix("").parts)
    _check_no_clash(top, name.split(".")[0])
    _put_on_path(top.parent)
    return _import(name, str(path))


def _load_lone_file(path: Path) -> ModuleType:
    """Under a private name (registered, so functions defined there pickle), its directory on
    sys.path so that `import helper` finds a neighbouring helper.py."""
    name = "rollouts_custom_reward_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UserInputError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    _put_on_path(path.parent)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # user code may raise anything while loading
        del sys.modules[name]
        raise _load_error(str(path), exc) from exc
    return module


def _import(name: str, shown: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise UserInputError(
                f"--reward-fn {shown}: no module named {exc.name!r}; install it or pass a file path"
            ) from exc
        raise _load_error(shown, exc) from exc
    except Exception as exc:  # user code may raise anything while loading
        raise _load_error(shown, exc) from exc


def _load_error(shown: str, exc: BaseException) -> UserInputError:
    return UserInputError(f"{shown} fails to import: {describe_exception(exc)}")


def _check_no_clash(top: Path, package: str) -> None:
    loaded = sys.modules.get(package)
    where = getattr(loaded, "__file__", None)
    if loaded is not None and (where is None or Path(where).resolve().parent != top):
        raise UserInputError(
            f"{top}: package name {package!r} is already taken by {where or 'a built-in module'}; "
            f"rename the package or pass {package}.module:FUNC with the right one installed"
        )


def _put_on_path(directory: Path) -> None:
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))


def load_function(spec: CustomSpec) -> tuple[CustomFn, ModuleType]:
    module = load_module(spec)
    function = getattr(module, spec.function, None)
    if not callable(function):
        where = spec.path if spec.path is not None else getattr(module, "__file__", spec.module)
        raise UserInputError(
            f"{where}: defines no function {spec.function!r}; check --reward-fn ({SPEC_FORMS})"
        )
    return function, module


# ---------------------------------------------------------------- version


def _python_files(root: Path) -> Iterator[Path | None]:
    """The Python files under root; None once MAX_DEPENDENCY_DIRS directories were walked."""
    for count, (directory, subdirs, files) in enumerate(os.walk(root)):
        if count >= MAX_DEPENDENCY_DIRS:
            yield None
            return
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        yield from (Path(directory) / f for f in sorted(files) if f.endswith(".py"))


def _installation_dirs() -> set[str]:
    """The folders of the Python installation and environment (standard library, site-packages),
    as given and resolved, each ending with a separator."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return {os.path.join(p, "") for p in prefixes | {os.path.realpath(p) for p in prefixes}}


def _loaded_under(root: Path) -> set[Path]:
    """Source files of the modules loaded so far from under root."""
    found = set()
    prefix = str(root) + os.sep
    # A reward outside the installation does not import its own code from there: those modules
    # (most of sys.modules) are passed over without resolving their paths.
    elsewhere = tuple(p for p in _installation_dirs() if not prefix.startswith(p))
    real_dirs: dict[str, str] = {}  # resolving each folder once: a thousand modules share a few
    for module in list(sys.modules.values()):
        where = getattr(module, "__file__", None)
        if not (where and where.endswith(".py")) or where.startswith(elsewhere):
            continue
        folder, name = os.path.split(where)
        if folder not in real_dirs:
            real_dirs[folder] = os.path.realpath(folder)
        real = os.path.join(real_dirs[folder], name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        if real.startswith(prefix):
            found.add(Path(real))
    return found


def dependency_version(module: ModuleType) -> tuple[str, str | None]:
    """A digest of the module's file and what it can import from its directory or package, and a
    note when that set could not be known."""
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    top = package_root(origin)
    root = top if top is not None else origin.parent
    files = _loaded_under(root) | {origin}
    note = None
    everything: set[Path] = set()
    for path in _python_files(root):
        if path is not None:
            everything.add(path.resolve())
        if path is None or len(everything) > MAX_DEPENDENCY_FILES:
            note = (
                f"{root} is too large to read whole: the verdict cache "
                f"key covers the {len(files)} modules loaded from it at start; after changing a "
                f"module that is imported later, pass --no-cache"
            )
            everything = set()
            break
    digest = hashlib.sha256()
    for path in sorted(files | everything):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    distribution = _distribution_version(module.__name__.split(".")[0]) if top is not None else None
    if distribution:
        digest.update(distribution.encode())
    return digest.hexdigest()[:12], note


def _distribution_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


# ---------------------------------------------------------------- the reward


class CustomReward:
    """A verl-style compute_score; versioned by its source and its local imports."""

    uses_context = True

    def __init__(self, spec: str, pass_threshold: float = DEFAULT_PASS_THRESHOLD) -> None:
        parsed = parse_spec(spec)
        self.pass_threshold = pass_threshold
        offer_nltk_data()  # before the import: IFEval ports look for Punkt then
        self.function, module = load_function(parsed)
        self.name = (
            f"{parsed.path.name}:{parsed.function}" if parsed.path is not None else str(parsed)
        )
        self.version, self.cache_note = dependency_version(module)
        if pass_threshold != DEFAULT_PASS_THRESHOLD:  # acc is part of every cached verdict
            self.version += f"+pass>={pass_threshold:g}"

    def extract(self, response: str) -> Extraction:
        return Extraction(response, "response")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        value = self.function(
            data_source=data_source,
            solution_str=answer,
            ground_truth=ground_truth,
            extra_info=extra_info if extra_info is not None else {},
        )
        return to_result(value, self.pass_threshold)


# Verdicts of plain float scores, shared (verdicts are never mutated): most functions return a
# few distinct numbers, and this runs once per row.
_PLAIN: dict[tuple[float, float], RewardResult] = {}


def to_result(value: Any, pass_threshold: float = DEFAULT_PASS_THRESHOLD) -> RewardResult:
    """verl's return forms: a number, or a dict with `score` whose other keys become columns;
    `acc` is the dict's own, else score >= pass_threshold."""
    if type(value) is float:  # the common case: no conversion
        plain = _PLAIN.get((value, pass_threshold))
        if plain is None:
            plain = RewardResult(score=value, acc=value >= pass_threshold, pred=None)
            if len(_PLAIN) < 4096:
                _PLAIN[value, pass_threshold] = plain
        return plain
    value = to_python(value)
    if isinstance(value, dict):
        if "score" not in value:
            raise ValueError(f"reward dict has no 'score' key (keys: {sorted(value)})")
        extra = {k: v for k, v in value.items() if k not in ("score", "acc", "pred")}
        score = _as_score(value["score"])
        acc = bool(value["acc"]) if "acc" in value else score >= pass_threshold
        pred = value.get("pred")
        return RewardResult(
            score=score,
            acc=acc,
            pred=None if pred is None else str(pred),
            extra=extra,
            answer_class=None if pred is None else "pred:" + str(pred),
        )
    score = _as_score(value)
    return RewardResult(score=score, acc=score >= pass_threshold, pred=None)


def _as_score(value: Any) -> float:
    """A number as a float (inf and NaN too: the scorer makes them `error` verdicts of one kind)."""
    if isinstance(value, bool | int | float):
        return float(value)
    raise ValueError(f"reward score must be a number, got {value!r}")
