"""GURU's CodeI/O reward (Reasoning360 `codeio`): `simulation__codeio*`, predicting a program's
input or output as JSON.

The answer: the first fenced block (```json or ```) of the reply, else the reply, parsed as JSON;
if that fails, the last complete top-level `{...}` in it (newlines removed). Its `output` key
(else `input`, else the whole object) is the prediction. The gold (`"output": ...` or
`"input": ...`, braces optional) is read the same way, `input` first; if it is not JSON, as a
Python literal, else as text. Both are normalised (JSON text inside strings parsed, "true" and
"false" in any case made booleans) and compared with `==`; a prediction equal to True or False
also counts when the gold text is literally `True`/`true` (`False`/`false`). 1.0 or 0.0.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction
from scoring.types import RewardResult

_FENCED = re.compile(r"```(?:json)?\s*([\s\S]*?)```")
_NOTHING = object()  # a reply with no JSON answer at all
_TRUTH_WORDS = (["True", "true", True], ["False", "false", False])


def normalize(value: Any) -> Any:
    """JSON text inside strings parsed, boolean words made booleans, containers element-wise."""
    if isinstance(value, str):
        text = value.strip()
        if (text.startswith("{") and text.endswith("}")) or (text.startswith("[") and text.endswith("]")):
            try:
                return normalize(json.loads(text))
            except json.JSONDecodeError:
                pass
        if text.lower() in {"true", "false"}:
            return text.lower() == "true"
        return value
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if isinstance(value, dict):
        return {key: normalize(item) for key, item in value.items()}
    return value


def last_complete_object(text: str) -> Any:
    """The last top-level `{...}` (braces counted, strings not understood) as JSON, or None."""
    depth = 0
    start = None
    last = None
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
            if start is None:
                start = index
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                last = text[start : index + 1]
                start = None
    if last:
        try:
            return json.loads(last.replace("\n", ""))
        except json.JSONDecodeError:
            pass
    return None


def predicted_value(reply: str) -> Any:
    """The prediction in a reply, or _NOTHING."""
    blocks = _FENCED.findall(reply)
    clean = (blocks[0] if blocks else reply).strip()
    try:
        found = json.loads(clean)
    except json.JSONDecodeError:
        found = last_complete_object(clean)
        if found is None:
            return _NOTHING
    except Exception:
        return _NOTHING
    try:
        return found.get("output", found.get("input", found))
    except Exception:  # JSON that is not an object (a list, a number): no answer
        return _NOTHING


def gold_value(gold: str) -> Any:
    if '"input":' in gold or '"output":' in gold:
        if not (gold.strip().startswith("{") and gold.strip().endswith("}")):
            gold = "{" + gold + "}"
        try:
            found = json.loads(gold)
            return found.get("input", found.get("output", found))
        except json.JSONDecodeError:
            pass
    try:
        found = json.loads(gold)
        return found.get("output", found.get("input", found))
    except Exception:
        try:
            return ast.literal_eval(gold)
        except Exception:
            return gold


def codeio_correct(prediction: Any, gold: str) -> bool:
    predicted = normalize(None if prediction is _NOTHING else prediction)
    truth = normalize(gold_value(gold))
    if any(predicted in words and gold in words for words in _TRUTH_WORDS):
        return True
    return bool(predicted == truth)


class GuruCodeioReward:
    name = "guru_codeio"
    version = "1"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        # The whole reply is the answer: the JSON in it is compared as values, in judge.
        return Extraction(response, "response")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        prediction = predicted_value(answer)
        correct = codeio_correct(prediction, str(ground_truth))
        shown = None if prediction is _NOTHING else json.dumps(prediction, default=str)[:200]
        return binary(correct, shown or "", "codeio:" + str(shown))
