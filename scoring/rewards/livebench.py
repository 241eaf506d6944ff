"""LiveBench's reasoning, data-analysis and language tasks as GURU scores them (`ood__livebench`):
`--reward-fn livebench`.

Each row names its task in `extra_info["task"]`; the ground truth is LiveBench's answer text. The
rules are those of GURU's copy of LiveBench's scorers (the tasks' pre-2024-11-25 versions for
`zebra_puzzle` and `connections`), including their partial credit: `web_of_lies_v3` scores
(all right + share right) / 2, `tablejoin` the F1 of the column mapping rounded to 2 places,
`plot_unscrambling` 1 - (edit distance of the sentence order) / (sentences), `connections` the
share of groups found. A task GURU does not score gets 0. Where GURU's scorer raises (its
`tableformat` is called with too few arguments, so it fails on every row; a `\\boxed{` that never
closes in `cta`) the row is an error naming the cause, not a score.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from rollouts.io import to_python
from scoring.rewards.extract import Extraction
from scoring.rewards.guru import hendrycks
from scoring.types import RewardResult


class NoReferenceVerdict(ValueError):
    """GURU's scorer fails on this row, so it has no verdict to match."""


# ---------------------------------------------------------------- LiveBench's boxed answers


def last_boxed(text: str) -> str | None:
    """The last `\\boxed{...}` (or `\\fbox{...}`) with its braces balanced, `$` removed; a
    `\\boxed ` (with a space) anywhere wins and runs to the next `$`."""
    boxed = hendrycks.last_boxed(text)
    if boxed is None or "\\boxed " in text:
        return boxed
    return boxed.replace("$", "").replace("fbox", "boxed")


def unboxed(boxed: str | None) -> str:
    if boxed is None:
        raise NoReferenceVerdict("livebench: a \\boxed{ that never closes")
    if "\\boxed " in boxed:
        if not boxed.startswith("\\boxed "):
            raise NoReferenceVerdict("livebench: a \\boxed answer that cannot be read")
        return boxed[len("\\boxed ") :]
    if not (boxed.startswith("\\boxed{") and boxed.endswith("}")):
        raise NoReferenceVerdict("livebench: a \\boxed answer that cannot be read")
    return boxed[len("\\boxed{") : -1]


def _bold(text: str) -> list[str]:
    return re.findall(r"\*\*(.*?)\*\*", text)


# ---------------------------------------------------------------- data analysis


def _letters_digits(text: str) -> str:
    return re.sub(r"[^\w]", "", text.lower().strip())


def column_type(gold: str, response: str) -> float:
    """cta: the named column type, ignoring case and punctuation; a longer answer ending in it
    passes."""
    answer = response
    if "\\boxed{" in answer:
        answer = unboxed(last_boxed(answer))
        answer = answer.replace("\\text{", "").replace("}", "").replace("\\", "")
    want, got = _letters_digits(gold), _letters_digits(answer)
    return 1.0 if want == got or want == got[-len(want) :] else 0.0


def _literal_or_none(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except Exception:  # literal_eval raises several kinds on model text
        return None


_UNREADABLE = object()


def _mapping_text(response: str) -> str:
    """The text where a join mapping is written when the response is not itself a literal."""
    flat = response.replace("\n", "")
    for fence in ("```python", "```json", "```"):
        found = re.findall(f"{fence}(.*?)```", flat)
        if found:
            return str(found[-1])
    if "\\boxed" in response:
        boxed = last_boxed(flat)
        if boxed:
            inner = unboxed(boxed)
            return re.sub(r"\\text{['|\"](.*?)['|\"]}", r"'\1'", inner).replace("\\", "")
    return response


def join_mapping(response: str) -> dict[Any, Any]:
    """The column mapping a response states (last `<solution>`, a literal, a fenced block, a
    box), its None values dropped; {} when there is none."""
    solutions = re.findall(r"<solution>(.*?)</solution>", response, re.DOTALL)
    if solutions:
        return join_mapping(solutions[-1].strip())
    try:
        mapping = ast.literal_eval(response)
    except Exception:  # not a literal: look inside
        mapping = _literal_or_none(_mapping_text(response).replace("null", "None"))
        if mapping is None:
            return {}
    if not isinstance(mapping, dict):
        return {}
    return {k: v for k, v in mapping.items() if v is not None}


def table_join(gold: Any, response: str) -> float:
    """tablejoin: F1 of the mapping's pairs, rounded to 2 places."""
    if not isinstance(gold, dict):
        try:
            gold = ast.literal_eval(gold)
        except Exception as exc:
            raise NoReferenceVerdict(
                f"livebench: tablejoin ground truth is no dict ({exc})"
            ) from exc
    mapping = join_mapping(response)
    if not mapping:
        return 0.0
    tp = fp = fn = 0
    for key, value in mapping.items():
        want = gold.get(key)
        if not want:
            fp += 1
        elif want == value:
            tp += 1
        else:
            fp += 1
            fn += 1
    fn += sum(1 for key in gold if not mapping.get(key))
    return float(np.round((2.0 * tp) / ((2.0 * tp) + fp + fn), 2))


def table_format(gold: Any, response: str) -> float:
    raise NoReferenceVerdict(
        "livebench: GURU's tableformat scorer fails on every row (it is called without the "
        "input table's command); score these rows with LiveBench itself"
    )


# ---------------------------------------------------------------- reasoning

_TRUTH_WORDS = ("yes", "no", "unknown")


def _latex_answer(response: str) -> str | None:
    """A box (`\\textbf{` counting as one) holding the answer; None when there is none."""
    text = response.replace("\\\\boxed{\\\\textbf{", "\\\\boxed{").replace("\\\\fbox{", "\\\\boxed{")
    boxed = last_boxed(text.replace("\\textbf{", "\\boxed{"))
    return unboxed(boxed) if boxed else None


def _last_triple(response: str) -> str | None:
    """The yes/no/unknown triple (`yes, no, yes`) written last in the response."""
    lowered = response.lower()
    best, best_at = None, -1
    for triple in itertools.product(_TRUTH_WORDS, repeat=3):
        at = lowered.find(", ".join(triple))
        if at > best_at:
            best, best_at = triple, at
    return ", ".join(best) if best is not None else None


def _bold_truth_words(response: str) -> str | None:
    words = [
        word.lower().strip().replace(",", "").replace(".", "")
        for match in _bold(response)
        for word in match.split()
    ]
    picked = [w for w in words if w in _TRUTH_WORDS][-3:]
    return ", ".join(picked) if picked else None


def _truth_answer(response: str, *, bold: bool) -> str | None:
    solutions = re.findall(r"<solution>(.*?)</solution>", response)
    if bold and not solutions:
        solutions = re.findall(r"</solution>(.*?)</solution>", response)
    answer = solutions[-1] if solutions else None
    if answer is None and bold and _bold(response):
        answer = _bold_truth_words(response)
    if answer is None or answer.strip() == "":
        boxed = _latex_answer(response)
        if boxed is not None:
            answer = boxed
    if answer is None:
        answer = _last_triple(response)
    return answer


def web_of_lies_v2(gold: str, response: str) -> float:
    """The three yes/no/unknown answers, all right; a longer answer holding them passes."""
    answer = _truth_answer(response, bold=True)
    if not answer:
        return 0.0
    if answer == gold.lower():
        return 1.0
    counted = answer.count("yes") + answer.count("no") + answer.count("unknown")
    return 1.0 if counted == 3 and gold.lower() in answer else 0.0


def web_of_lies_v3(gold: str, response: str) -> float:
    """(all right + share right) / 2, comparing comma-separated answers as written."""
    answer = _truth_answer(response, bold=False)
    if answer is None:
        return 0.0
    given, wanted = answer.split(","), gold.split(",")
    right = sum(1 for i, word in enumerate(wanted) if i < len(given) and given[i] == word)
    return ((right == len(wanted)) + right / len(wanted)) / 2


def house_traversal(gold: str, response: str) -> float:
    """The names in order: as the last bold phrases one by one, or all inside the last one."""
    bold = re.findall(r"(\*{2,})(.*?)\1", response.lower())
    if not bold:
        return 0.0
    names = gold.lower().split(" ")
    # Each bold match is a (stars, text) pair: a name must equal a whole bold text.
    if len(bold) >= len(names) and all(
        name in bold[-1 - i] for i, name in enumerate(reversed(names))
    ):
        return 1.0
    last, at = bold[-1][1], -1
    for name in names:
        found = last.find(name)
        if found == -1 or found <= at:
            return 0.0
        at = found
    return 1.0


_NUMBER_WORDS = {
    "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine",
}


def _zebra_word_matches(word: str, gold: str) -> bool:
    gold = gold.lower()
    return (
        word.lower() == gold
        or (word in _NUMBER_WORDS and _NUMBER_WORDS[word] == gold)
        or word.lower() + " movies" == gold
    )


def zebra_puzzle(gold: str, response: str) -> float:
    """The last `***word***`, else the last word; a digit may stand for its word."""
    bold = re.findall(r"\*\*\*(\w+)\*\*\*", response)
    if bold:
        return 1.0 if _zebra_word_matches(bold[-1], gold) else 0.0
    words = re.findall(r"\b\w+\b", response)
    return 1.0 if _zebra_word_matches(words[-1] if words else "", gold) else 0.0


_NUMBER_NAMES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_SPELLED = {name: str(value) for value, name in enumerate(_NUMBER_NAMES.split())}
_SHAPES = ("tetrahedra", "tetrahedron", "triangle", "square")


def _spatial_word_matches(word: str, gold: str) -> bool:
    if word == gold or _SPELLED.get(word) == gold:
        return True
    return any(gold == s and s in word and len(word) < 2 * len(s) + 5 for s in _SHAPES)


def spatial(gold: str, response: str) -> float:
    """One of the last three bold phrases, or the last box."""
    if response == gold:
        return 1.0
    wanted = gold.strip().lower()
    bold = [w.strip().lower() for w in re.findall(r"\*\*([^\*]+)\*\*", response)[-3:]]
    if any(_spatial_word_matches(word, wanted) for word in bold):
        return 1.0
    boxed = last_boxed(response.replace("\\\\fbox{", "\\\\boxed{"))
    if boxed:
        answer = unboxed(boxed).replace("\\textbf{", "").replace("\\mathbf{", "").replace("}", "")
        return 1.0 if answer == gold else 0.0
    return 0.0


# ---------------------------------------------------------------- language


def _edit_distance(a: list[int], b: list[int]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(
                previous[j - 1] if x == y else 1 + min(previous[j], current[j - 1], previous[j - 1])
            )
        previous = current
    return previous[-1]


def _plot_summary(response: str) -> str:
    found = re.search(r"<PLOT_SUMMARY>(.*)</PLOT_SUMMARY>", response, re.DOTALL)
    if not found:
        found = re.search(r"<PLOT_SUMMARY>(.*)", response, re.DOTALL)
    return found.group(1) if found else response


def plot_unscrambling(gold: str, response: str) -> float:
    """1 - edit distance between the true sentence order and the answer's, per sentence."""
    summary = _plot_summary(response)
    wanted = [s.strip() for s in gold.split(".") if s.strip()]
    given = [
        s.strip()
        for s in summary.split(".")
        if s.strip() and s.strip() not in ("</PLOT_SUMMARY>", "**End of Plot Summary**")
    ]
    order = []
    for sentence in wanted:
        closest = difflib.get_close_matches(sentence, given, n=1, cutoff=0.0)
        if closest:
            order.append(given.index(closest[0]))
    if not wanted:
        raise NoReferenceVerdict("livebench: plot_unscrambling ground truth has no sentence")
    return 1 - _edit_distance(list(range(len(wanted))), order) / len(wanted)


def typos(gold: str, response: str) -> float:
    """The corrected text appears in the answer (last `<solution>`, or between ` --- ` marks)."""
    solutions = re.findall(r"<solution>(.*?)</solution>", response)
    if solutions:
        answer = solutions[-1]
    else:
        answer = response.replace("<solution>", "").replace("</solution>", "")
        marked = re.search(r".* --- (.*?) --- .*", answer)
        answer = marked.group(1) if marked else answer
    answer = " ".join(line for line in answer.strip().split("\n") if line)
    return 1.0 if gold in answer else 0.0


def _groups_of_four(words: list[str]) -> list[set[str]]:
    groups: list[set[str]] = [set()]
    for word in words:
        if len(groups[-1]) == 4:
            groups.append(set())
        groups[-1].add(word.strip().lower())
    return groups


def connections(gold: str, response: str) -> float:
    """The best bold phrase's share of the four-word groups found together."""
    bold = _bold(response.replace("\n", ""))
    if not bold:
        return 0.0
    wanted = _groups_of_four(gold.split(","))
    best = 0.0
    for phrase in bold:
        given = _groups_of_four(phrase.split(","))
        found = sum(1 for group in wanted if any(group <= mine for mine in given))
        best = max(best, found / len(wanted))
    return best


TASKS: dict[str, Callable[[Any, str], float]] = {
    "cta": column_type,
    "tablejoin": table_join,
    "tableformat": table_format,
    "web_of_lies_v2": web_of_lies_v2,
    "web_of_lies_v3": web_of_lies_v3,
    "house_traversal": house_traversal,
    "zebra_puzzle": zebra_puzzle,
    "spatial": spatial,
    "plot_unscrambling": plot_unscrambling,
    "typos": typos,
    "connections": connections,
}


def task_of(extra_info: Any) -> str:
    extra = to_python(extra_info)
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            extra = None
    if not isinstance(extra, dict) or "task" not in extra:
        raise NoReferenceVerdict("livebench: extra_info has no 'task'; give LiveBench's task name")
    return str(extra["task"])


class LivebenchReward:
    """The task's own score, partial credit included; `acc` when it is 1."""

    name = "livebench"
    version = "1"
    uses_context = True  # the task is in extra_info

    def extract(self, response: str) -> Extraction:
        """Every task reads the whole response its own way."""
        return Extraction(response, "response")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        scorer = TASKS.get(task_of(extra_info))
        score = float(scorer(to_python(ground_truth), answer)) if scorer is not None else 0.0
        return RewardResult(score=score, acc=score == 1.0, pred=None, status="ok")
