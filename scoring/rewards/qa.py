"""Short-answer QA: SQuAD normalisation, exact match (the score) and token F1, several golds."""

from __future__ import annotations

import collections
import json
import re
import string
import unicodedata
from typing import Any

from scoring.rewards.base import NO_ANSWER, binary
from scoring.rewards.extract import (
    Extraction,
    collapse_whitespace,
    final_text,
    last_answer_line,
    last_boxed,
)
from scoring.types import RewardResult

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(?P<answer>.*?)</answer>", re.DOTALL | re.IGNORECASE)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation after Unicode NFKC (H₂O is H2O): lower case, no punctuation, no
    articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(pred: str, gold: str) -> float:
    pred_tokens = normalize_answer(pred).split()
    gold_tokens = normalize_answer(gold).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(ground_truth: Any) -> list[str]:
    """A string, a list of strings, or a dict with `target`/`answers` (as some QA sets store).

    A list written as JSON text (how `rollouts prepare mix` stores lists beside string answers of
    other domains) is decoded first."""
    if isinstance(ground_truth, str) and ground_truth.startswith("["):
        ground_truth = _json_list(ground_truth) or ground_truth
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", ground_truth.get("answers", []))
    if isinstance(ground_truth, list | tuple):
        return [str(g) for g in ground_truth]
    return [str(ground_truth)]


def _json_list(text: str) -> list[str] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


class QaReward:
    """Exact match after normalisation; the best token F1 over the golds is recorded as `f1`."""

    name = "qa"
    version = "2"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        text = final_text(response)
        if isinstance(text, Extraction):
            return text
        tags = _ANSWER_TAG.findall(text)
        if tags:
            return _nonempty(tags[-1], "tag")
        boxed = last_boxed(text)
        if boxed is not None and boxed.answer is not None:
            return boxed
        line = last_answer_line(text)
        if line is not None:
            return Extraction(line, "answer_line")
        return _nonempty(text, "response")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        golds = gold_answers(ground_truth)
        normalized = normalize_answer(answer)
        if not normalized:
            return NO_ANSWER
        exact = any(normalized == normalize_answer(g) for g in golds)
        result = binary(exact, answer, "text:" + normalized)
        result.extra["f1"] = max((token_f1(answer, g) for g in golds), default=0.0)
        return result


def _nonempty(text: str, source: str) -> Extraction:
    answer = collapse_whitespace(text)
    return Extraction(answer, source) if answer else Extraction(None, "none")
