"""User reward functions: called as verl calls them, loaded by module path or file (packages with
relative imports), errors by the user's file and line, versions that follow local imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rollouts.errors import UserInputError
from scoring.rewards.custom import CustomReward

KEYWORD_REWARD = """
def compute_score(solution_str, ground_truth, data_source=None, extra_info=None):
    # verl calls by keyword; a positional call would put data_source into solution_str.
    assert isinstance(extra_info, dict), extra_info
    return float(solution_str == ground_truth and data_source == "src")
"""


def test_custom_function_is_called_by_keyword_like_verl(tmp_path: Path) -> None:
    path = tmp_path / "kw.py"
    path.write_text(KEYWORD_REWARD)
    reward = CustomReward(f"{path}:compute_score")
    assert reward.judge("42", "42", "src", None).score == 1.0
    assert reward.judge("41", "42", "src", {"split": "test"}).score == 0.0


def make_package(root: Path, name: str = "myrewards") -> Path:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("def normalise(text):\n    return text.strip().lower()\n")
    (package / "reward.py").write_text(
        "from .helpers import normalise\n\n"
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    return float(normalise(solution_str) == normalise(ground_truth))\n"
    )
    return package


def test_file_inside_a_package_is_imported_with_its_package(tmp_path: Path) -> None:
    package = make_package(tmp_path, "pkg_by_file")
    reward = CustomReward(f"{package / 'reward.py'}:compute_score")
    assert reward.judge(" Paris ", "paris", "t", None).score == 1.0


def test_module_path_spec_loads_an_importable_function(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    make_package(tmp_path, "pkg_by_module")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = CustomReward("pkg_by_module.reward:compute_score")
    assert reward.judge("A", "a", "t", None).score == 1.0
    assert reward.name == "pkg_by_module.reward:compute_score"
    with pytest.raises(UserInputError, match="no module named 'no_such_pkg'"):
        CustomReward("no_such_pkg.reward:compute_score")
    with pytest.raises(UserInputError, match="defines no function 'missing'"):
        CustomReward("pkg_by_module.reward:missing")


def test_load_errors_name_the_users_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import os\n\nvalue = 1 / 0\n")
    with pytest.raises(UserInputError) as caught:
        CustomReward(f"{broken}:compute_score")
    assert f"{broken}:3" in str(caught.value)
    assert "ZeroDivisionError" in str(caught.value)
    assert "rollouts_custom_reward" not in str(caught.value)
    bad_syntax = tmp_path / "syntax.py"
    bad_syntax.write_text("def compute_score(:\n")
    with pytest.raises(UserInputError, match=f"{bad_syntax}:1"):
        CustomReward(f"{bad_syntax}:compute_score")


def test_version_follows_the_modules_it_imports(tmp_path: Path) -> None:
    package = make_package(tmp_path, "pkg_versioned")
    spec = f"{package / 'reward.py'}:compute_score"
    before = CustomReward(spec).version
    (package / "helpers.py").write_text("def normalise(text):\n    return text\n")
    assert CustomReward(spec).version != before
    # A lone file: its neighbours count too (it may import them).
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "util.py").write_text("X = 1\n")
    (lone / "r.py").write_text("import util\n\ndef compute_score(**kw):\n    return util.X\n")
    first = CustomReward(f"{lone / 'r.py'}:compute_score")
    assert first.judge("a", "b", "t", None).score == 1.0
    (lone / "util.py").write_text("X = 0\n")
    assert CustomReward(f"{lone / 'r.py'}:compute_score").version != first.version


def test_verl_default_compute_score_by_module_path_when_installed() -> None:
    if "verl" not in sys.modules:
        try:
            import verl  # noqa: F401
        except ImportError:
            with pytest.raises(UserInputError, match="no module named 'verl'"):
                CustomReward("verl.utils.reward_score:default_compute_score")
            return
    reward = CustomReward("verl.utils.reward_score:default_compute_score")
    assert reward.judge("#### 72", "72", "openai/gsm8k", None).score == 1.0


def test_version_says_when_it_cannot_know_the_dependencies(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from scoring.rewards import custom

    monkeypatch.setattr(custom, "MAX_DEPENDENCY_FILES", 3)
    folder = tmp_path / "big"
    folder.mkdir()
    for n in range(5):
        (folder / f"mod{n}.py").write_text(f"X = {n}\n")
    (folder / "r.py").write_text("def compute_score(**kw):\n    return 1.0\n")
    reward = CustomReward(f"{folder / 'r.py'}:compute_score")
    assert reward.cache_note is not None and "pass --no-cache" in reward.cache_note
    small = make_package(tmp_path, "pkg_small")
    assert CustomReward(f"{small / 'reward.py'}:compute_score").cache_note is None


HEAVY = ("sympy", "math_verify", "nltk", "langdetect", "aiohttp")


def _modules_after_scoring(tmp_path: Path, reward_fn: str) -> list[str]:
    """The heavy libraries a fresh process has imported after one `score` command (its whole
    start-up: the CLI, reading, judging, writing)."""
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "p", "response": r"\boxed{2}", "data_source": "math",
                                "reward_model": {"ground_truth": "2"}}) + "\n")
    arguments = [str(data), "--reward-fn", reward_fn, "--workers", "1", "--no-cache", "--overwrite"]
    code = (
        "import sys\n"
        "from scoring.score_cli import main\n"
        "try:\n"
        f"    main({arguments!r})\n"
        "finally:\n"
        f"    print('imported:', ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = done.stdout.strip().splitlines()[-1].removeprefix("imported:").strip()
    return [m for m in imported.split(",") if m]


def test_a_custom_reward_imports_no_other_rewards_libraries(tmp_path: Path) -> None:
    """Start-up: sympy and Math-Verify (about a second) only for runs that use math, the judge's
    HTTP client (aiohttp) only for runs that ask a judge."""
    reward = tmp_path / "plain.py"
    reward.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
                      "    return float(ground_truth in solution_str)\n")
    assert _modules_after_scoring(tmp_path, f"{reward}:compute_score") == []
    assert {"sympy", "math_verify"} <= set(_modules_after_scoring(tmp_path, "math"))


NLTK_REWARD = """
import nltk

nltk.download("punkt", quiet=True)  # what IFEval ports do at import; offline it finds nothing
from nltk.corpus import stopwords

STOP = set(stopwords.words("english"))


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    sentences = nltk.sent_tokenize(solution_str)
    words = [w for w in nltk.word_tokenize(solution_str) if w.isalpha() and w.lower() not in STOP]
    return float(len(sentences) == int(ground_truth) and len(words) > 0)
"""


def test_custom_reward_finds_the_shipped_nltk_data_offline(tmp_path: Path) -> None:
    """No NLTK data anywhere NLTK looks by itself (HOME is empty, NLTK_DATA unset), downloads
    refused: a custom function using Punkt and the stop words works from what `score` ships."""
    reward = tmp_path / "port.py"
    reward.write_text(NLTK_REWARD)
    data = tmp_path / "rows.jsonl"
    texts = [("Dr. Smith crossed the bridge. Then he left.", "2"), ("One sentence here.", "1")]
    data.write_text("".join(json.dumps({"prompt": t, "response": t, "data_source": "port",
                                        "reward_model": {"ground_truth": g}}) + "\n" for t, g in texts))
    env = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
    env.update(HOME=str(tmp_path / "home"), ROLLOUTS_NLTK_DATA=str(tmp_path / "shipped"),
               ROLLOUTS_SCORE_CACHE=str(tmp_path / "cache"), no_proxy="*", https_proxy="http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-c", "from scoring.score_cli import main; main()", str(data),
         "--reward-fn", str(reward), "--workers", "1"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr
    scored = pd.read_parquet(tmp_path / "rows.scored.parquet")
    assert scored["score_status"].tolist() == ["ok", "ok"]
    assert scored["score"].tolist() == [1.0, 1.0]
