"""`rollouts show --html`: one self-contained page to browse samples, fast on 100,000 of them.

The rows travel as column arrays (each prompt's text once, not once per sample) in one JSON block
that the page's script reads, and the responses, which are most of the bytes, as plain text the
script slices by offset when a response is drawn (never parsed). The responses of the first page
of prompts come in a small text block before the first drawing and the rest in one after it, so
the first page is drawn before the browser has read the bulk of the file; the page is drawn
again, with everything, once it has. It draws one page of prompts at a time.

Every value reaches the page through those two blocks, and the script sets it into the document as
text, never as markup. The JSON is made safe for a script element (`<`, `>`, `&` and the JavaScript
line separators as \\u escapes, so no `</script>` or `<!--` can end or bend it); the text block
writes `&`, `<`, carriage return and NUL as `&a;`, `&l;`, `&r;`, `&0;` (the HTML parser would
otherwise end the block at `</script` or change those bytes). The template's markers are replaced
in a single pass, so a value that contains a marker is never substituted again.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from typing import Any

import pandas as pd

from rollouts.io import to_python

MARKER = re.compile(r"\{\{(TITLE|DATA|FIRST_RESPONSES|MORE_RESPONSES)\}\}")
PAGE_SIZE = 20  # prompts drawn at a time
TEXT_ESCAPES = {"&": "&a;", "<": "&l;", "\r": "&r;", "\0": "&0;"}
# Characters that could end or bend a <script> element; JSON only holds them inside strings.
SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def page_data(frame: pd.DataFrame, title: str, response_lengths: list[int]) -> dict[str, Any]:
    """The samples as column arrays: prompts once each, samples pointing at them by index, and
    each response's length in the text block (in UTF-16 units, as the script counts)."""
    prompts = frame.drop_duplicates("prompt_key")
    index = {key: i for i, key in enumerate(prompts["prompt_key"])}
    runs = list(dict.fromkeys(frame["run"]))
    run_index = {run: i for i, run in enumerate(runs)}
    return {
        "title": title,
        "page_size": PAGE_SIZE,
        "runs": runs,
        "prompts": {
            "id": prompts["prompt_key"].tolist(),
            "text": prompts["prompt_text"].tolist(),
            "source": [_text(v) for v in prompts["data_source"]],
            "gold": [_text(v) for v in prompts["gold"]],
        },
        "samples": {
            "prompt": [index[key] for key in frame["prompt_key"]],
            "run": [run_index[run] for run in frame["run"]],
            "idx": [_text(v) for v in frame["sample_idx"]],
            "response_length": response_lengths,
            "pred": [_text(v) for v in frame["pred"]],
            "score": [_number(v) for v in frame["score"]],
            "verdict": frame["verdict"].tolist(),
            "finish": [_text(v) for v in frame["finish_reason"]],
            "status": frame["status"].tolist(),
        },
    }


def _text(value: Any) -> str:
    value = to_python(value)
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(value: Any) -> float | None:
    value = to_python(value)
    if value is None or isinstance(value, str) or value != value:
        return None
    return float(value)


def script_json(data: Any) -> str:
    """JSON that can sit inside <script type="application/json"> whatever its strings hold."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: SCRIPT_UNSAFE[m.group(0)], text)


def escaped_responses(frame: pd.DataFrame) -> tuple[list[str], list[int]]:
    """The responses escaped for the text blocks, and each one's length in UTF-16 units."""
    pattern = re.compile("[&<\r\0]")
    escaped = [pattern.sub(lambda m: TEXT_ESCAPES[m.group(0)], "" if v is None else str(v))
               for v in frame["response"]]
    return escaped, [len(text.encode("utf-16-le")) // 2 for text in escaped]


def by_prompt(frame: pd.DataFrame) -> pd.DataFrame:
    """The samples of each prompt together, prompts in their order in the frame, so the
    responses of the first page of prompts are a prefix of the text."""
    order = {key: i for i, key in enumerate(dict.fromkeys(frame["prompt_key"]))}
    position = frame["prompt_key"].map(order)
    return frame.assign(_prompt=position).sort_values("_prompt", kind="stable").drop(columns="_prompt")


def render_html(frame: pd.DataFrame, title: str) -> str:
    """The template with its markers replaced once each, in one pass."""
    template = (resources.files("rollouts") / "data" / "show.html").read_text(encoding="utf-8")
    frame = by_prompt(frame)
    responses, lengths = escaped_responses(frame)
    first_page = frame["prompt_key"].isin(list(dict.fromkeys(frame["prompt_key"]))[:PAGE_SIZE])
    first = int(first_page.sum())
    values = {
        "TITLE": html.escape(title),
        "DATA": script_json(page_data(frame, title, lengths)),
        "FIRST_RESPONSES": "".join(responses[:first]),
        "MORE_RESPONSES": "".join(responses[first:]),
    }
    return MARKER.sub(lambda m: values[m.group(1)], template)
