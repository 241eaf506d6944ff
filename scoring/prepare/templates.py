"""Prompt templates per domain, with the instructions researchers commonly use.

A template is text holding `{question}`, replaced by the item's question (plain replacement, so
LaTeX braces such as `\\boxed{}` need no escaping). Text without `{question}` is an instruction put
after the question with a space, as verl's preprocessing scripts do. `none` is the question alone.
"""

from __future__ import annotations

import hashlib

DEFAULT_TEMPLATES: dict[str, str] = {
    "math": "{question} Let's think step by step and output the final answer within \\boxed{}.",
    "gsm8k": "{question} Let's think step by step and output the final answer after \"####\".",
    "code": "{question}\n\nWrite a solution in Python. Output only the code inside ```python``` "
    "blocks.",
    "qa": "Answer the following question concisely.\n\nQuestion: {question}",
    "mcq": "{question}\n\nAnswer with the letter of the correct option, as 'Answer: X'.",
    "none": "{question}",
}

PLACEHOLDER = "{question}"


def resolve_template(name_or_text: str | None, default: str) -> str:
    """A built-in template by name, the user's own text, or the domain's default."""
    if name_or_text is None:
        return DEFAULT_TEMPLATES[default]
    if name_or_text in DEFAULT_TEMPLATES:
        return DEFAULT_TEMPLATES[name_or_text]
    if PLACEHOLDER in name_or_text:
        return name_or_text
    return PLACEHOLDER + " " + name_or_text


def apply_template(template: str, question: str) -> str:
    return template.replace(PLACEHOLDER, question)


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()[:12]
