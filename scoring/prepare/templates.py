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
    # GURU's (Reasoning360's data_preprocess/) wording per domain, word for word.
    "arcagi": "{question}What is the output grid? Please put your answer within <answer> and "
    "</answer> tags, your final answer should be only the output grid (2d array).\n",
    "zebra_puzzle": "{question} Output the grid in the form of a dictionary with keys as header "
    "containing a list of the attributes and rows denoting each row of the final grid. Please "
    "return the final answer in <answer> </answer> tags, for example <answer> {\"header\": "
    "[\"Position\", \"Nationality\", \"Job\"], \"rows\": [[\"1\", \"british\", \"plumber\"], "
    "[\"2\", \"polish\", \"carpenter\"]]} </answer>.",
    "ordering_puzzle": "{question} Please put your answer within <answer> and </answer> tags, "
    "for example <answer> ['pigeon', 'sparrow', 'quail'] </answer>.",
    "graph_puzzle": "{question} Please put your answer within <answer> and </answer> tags, for "
    "example <answer> fdebme </answer>.",
    "stem_web": "You are a knowledgeable assistant. Answer the following questions and think step "
    "by step. Please output the final answer within \\boxed{}. {question}",
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
