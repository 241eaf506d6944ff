"""ifeval verdicts equal the reference implementations', for every IFEval and IFBench instruction.

The references are Google's IFEval code as carried by lm-evaluation-harness and IFBench's own
evaluation code (verbatim copies in tests/ifeval_reference/). Instruction kwargs come from each
check's own random `build_description()` (seeded per instruction); responses are a pool of texts
shaped to satisfy or violate common constraints plus texts built from the kwargs themselves.
NLTK downloads fail throughout: scoring must work from the project's installed data alone.
"""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Iterator
from typing import Any

import nltk
import pytest

from scoring.rewards import ifeval_data
from scoring.rewards.ifeval import IfevalReward, check_instructions, read_instructions

PROMPT = "Write a short note about the river Thames and its bridges for visiting students."
UNCHECKABLE = {"words:start_verb"}  # needs NLTK's tagger, which no package installs


def refuse_download(*args: Any, **kwargs: Any) -> bool:
    raise AssertionError(f"nltk.download{args} called while scoring")


@pytest.fixture(scope="module", autouse=True)
def offline_nltk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fresh project NLTK folder, and nltk.download failing for the whole module."""
    patch = pytest.MonkeyPatch()
    patch.setenv(ifeval_data.DATA_ENV, str(tmp_path_factory.mktemp("nltk")))
    patch.setattr(nltk, "download", refuse_download)
    ifeval_data.ensure_nltk_data.cache_clear()
    ifeval_data.instruction_registries.cache_clear()
    yield
    patch.undo()
    ifeval_data.ensure_nltk_data.cache_clear()
    ifeval_data.instruction_registries.cache_clear()


@pytest.fixture(scope="module")
def references(offline_nltk: None) -> dict[str, Any]:
    """The reference modules, imported with nltk.download a no-op (they call it at import)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nltk, "download", lambda *a, **k: True)
        from tests.ifeval_reference.ifbench import evaluation_lib
        from tests.ifeval_reference.lm_eval_ifeval import utils
    return {"ifeval": utils, "ifbench": evaluation_lib}


# ---------------------------------------------------------------- cases

BASE_RESPONSES = [
    "",
    "Hello world.",
    "THE THAMES FLOWS THROUGH LONDON. MANY BRIDGES CROSS IT, AND STUDENTS LOVE THEM.",
    "the thames flows through london. many bridges cross it and students love them.",
    '"The Thames is a river in England, and Tower Bridge crosses it."',
    '{"river": "Thames", "bridges": ["Tower Bridge", "London Bridge"]}',
    "```json\n{\"river\": \"Thames\"}\n```",
    "* Tower Bridge opens for ships\n* London Bridge is plain\n* Millennium Bridge wobbled once",
    "Sure! Here is my answer:\n*Tower Bridge* is *famous* and **old**.\nHope this helps!",
    "<<The River Thames>>\n\nThe Thames runs east. It has many bridges.\n\n***\n\nStudents visit "
    "[place] and [time] often.\n\nP.S. Bring a coat.",
    "SECTION 1\nThe river is long.\nSECTION 2\nThe bridges are many.",
    "Paragraph one is about water flowing slowly through the city of London.\n\nParagraph two "
    "is about the bridges.\n\nParagraph three ends it. Is that enough? Yes! That is all.",
    "My answer is yes.",
    "My answer is no.",
    "Tower Bridge opened in 1894 and Westminster Bridge in 1862; I love them; is that any good?",
    "Alice met Bob near Big Ben; Carol and Dave walked along. 3 boats, 12 gulls, 7 swans.",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    PROMPT + " The Thames is lovely.",
    "Wow, look: (a (b (c))) and \"quoted 'inner' text\" here!",
    "Bright bridges bend. Calm currents carry cargo. Deep docks dwell.",
    "😀 The river shines. 🌉 Bridges glow at night.",
    "Any reply\nPS: end here.\nIs there anything else I can help with?",
]


# Checks whose random defaults cannot work (their text to compare with has no default).
FIXED_KWARGS = {"ratio:overlap": {"reference_text": PROMPT, "percentage": 40}}


def random_kwargs(instruction_id: str, cls: type) -> dict[str, Any]:
    """The kwargs a check picks for itself (seeded), with a prompt for those that need one."""
    random.seed(instruction_id)
    instance = cls(instruction_id)
    try:
        instance.build_description(**FIXED_KWARGS.get(instruction_id, {}))
    except (ValueError, TypeError):  # a prompt is required, or the random default is broken
        accepted = inspect.signature(instance.build_description).parameters
        wanted = {"prompt_to_repeat": PROMPT, "n_start": 6, "n_end": 11, "N": 3}
        instance.build_description(**{k: v for k, v in wanted.items() if k in accepted})
    return {k: v for k, v in (instance.get_instruction_args() or {}).items() if v is not None}


def kwarg_response(kwargs: dict[str, Any]) -> list[str]:
    """Texts made of the kwargs' own words, so keyword-like checks also get satisfied."""
    words: list[str] = []
    for value in kwargs.values():
        if isinstance(value, str):
            words.append(value)
        elif isinstance(value, list | tuple):
            words.extend(map(str, value))
    if not words:
        return []
    joined = " ".join(words)
    repeat = str(kwargs.get("prompt_to_repeat", ""))
    return [
        f"{joined}. {joined}, {joined}!",
        f"{repeat}\n{joined} about the river.\n{kwargs.get('end_phrase', joined)}".strip(),
        f"**{joined}**\n\n" + "\n".join(f"- {w}" for w in words),
    ]


def cases(references: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(benchmark, IFEval-style row, response): every instruction alone against every response,
    then pairs and triples of one benchmark's instructions."""
    registries = {
        "ifeval": references["ifeval"].instructions_registry.INSTRUCTION_DICT,
        "ifbench": references["ifbench"].instructions_registry.INSTRUCTION_DICT,
    }
    out: list[tuple[str, dict[str, Any], str]] = []
    rng = random.Random(19)
    for benchmark, registry in registries.items():
        singles = []
        for instruction_id, cls in sorted(registry.items()):
            if instruction_id in UNCHECKABLE:
                continue
            kwargs = random_kwargs(instruction_id, cls)
            singles.append((instruction_id, kwargs))
            row = {"instruction_id_list": [instruction_id], "kwargs": [kwargs], "prompt": PROMPT}
            for response in BASE_RESPONSES + kwarg_response(kwargs):
                out.append((benchmark, row, response))
        for size in (2, 3):
            for _ in range(15):
                chosen = rng.sample(singles, size)
                row = {
                    "instruction_id_list": [i for i, _ in chosen],
                    "kwargs": [k for _, k in chosen],
                    "prompt": PROMPT,
                }
                out.append((benchmark, row, rng.choice(BASE_RESPONSES)))
    return out


def reference_verdicts(references: dict[str, Any], benchmark: str, row: dict[str, Any], response: str):
    module = references[benchmark]
    example = module.InputExample(
        key=0,
        instruction_id_list=list(row["instruction_id_list"]),
        prompt=row["prompt"],
        kwargs=[dict(k) for k in row["kwargs"]],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nltk, "download", lambda *a, **k: True)
        if benchmark == "ifeval":
            strict = module.test_instruction_following_strict(example, response)
            loose = module.test_instruction_following_loose(example, response)
        else:
            answers = {row["prompt"]: response}
            strict = module.test_instruction_following_strict(example, answers)
            loose = module.test_instruction_following_loose(example, answers)
    return strict.follow_instruction_list, loose.follow_instruction_list


# ---------------------------------------------------------------- tests


def test_every_reference_instruction_is_known(references: dict[str, Any]) -> None:
    ifeval, ifbench = ifeval_data.instruction_registries()
    assert set(ifeval) == set(references["ifeval"].instructions_registry.INSTRUCTION_DICT)
    assert set(ifbench) == set(references["ifbench"].instructions_registry.INSTRUCTION_DICT)
    assert len(ifeval) == 25 and len(ifbench) == 58


def test_verdicts_equal_the_reference(references: dict[str, Any]) -> None:
    with pytest.MonkeyPatch.context() as patch:  # the reference's checks call nltk.download
        patch.setattr(nltk, "download", lambda *a, **k: True)
        all_cases = cases(references)
    assert len(all_cases) >= 200
    outcomes: dict[str, set[bool]] = {}
    mismatches = []
    for benchmark, row, response in all_cases:
        ours = check_instructions(response, read_instructions(row, None))
        theirs = reference_verdicts(references, benchmark, row, response)
        if ours != theirs:
            mismatches.append((row["instruction_id_list"], response[:40], ours, theirs))
        for instruction_id, strict in zip(row["instruction_id_list"], ours[0], strict=True):
            outcomes.setdefault(instruction_id, set()).add(strict)
    assert not mismatches, mismatches[:5]
    covered = set(outcomes)
    ifeval, ifbench = ifeval_data.instruction_registries()
    assert covered == (set(ifeval) | set(ifbench)) - UNCHECKABLE
    both = [i for i, seen in outcomes.items() if seen == {True, False}]
    assert len(both) >= 40, f"only {len(both)} instructions were seen both followed and not"


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
