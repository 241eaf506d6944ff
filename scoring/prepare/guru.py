"""GURU (Reasoning360) domains for `prepare`: each raw dataset's row → the question, the ground
truth in the form that domain's reward reads, and the extra_info it needs; the prompt wording is
GURU's (scoring.prepare.templates). Data sources take GURU's names, so `score --reward-fn auto`
picks the GURU reward.

- arcagi: ARC tasks `{train: [{input, output}], test: [{input, output}]}` (up to 6 examples shown)
- barc: BARC rows `{examples: [[input, output], ...]}` (the last shown pair after 6 is the test)
- zebra_puzzle: `{instruction, clues, ground_truth}` (the solved grid, a dict or its text)
- ordering_puzzle: `{instruction, input, ground_truth}` (the ordered names)
- graph_puzzle: `{prompt, correct_response}` (a word of letters; `look_ahead` kept)
- livebench: LiveBench rows `{turns, ground_truth, task}` (category and release date kept)
- ifeval: google/IFEval `{prompt, instruction_id_list, kwargs}` (kwargs become the ground truth)
- ifbench: IF_multi_constraints rows `{messages, ground_truth}`
- stem_web: WebInstruct rows `{question, answer}` (judged by a model: see `score --judge-*`)
"""

from __future__ import annotations

import ast
import json
from typing import Any

from scoring.prepare.kinds import ConvertOptions, Item, Unextractable, text_field

MAX_EXAMPLES = 6
ARC_HEADER = (
    "You are a world-class puzzle solver with exceptional pattern recognition skills. Your task "
    "is to analyze puzzles, spot patterns, and provide direct solutions.\n"
    "Given input-output grid pairs as reference examples, carefully observe the patterns to "
    "predict the output grid for new test input. Each pair follows the same transformation rule. "
    "Grids are 2D arrays. Here are the input and output grids for the reference examples:\n"
)
RULE = "----------------------------------------\n"
ARC_SOLVE = (
    "Now, solve the following puzzle based on its input grid by applying the rules you have "
    "learned from the training data.\n"
)


def _plain(value: Any) -> Any:
    from rollouts.io import to_python

    return to_python(value)


def _arc_question(pairs: list[tuple[Any, Any]], test_input: Any) -> str:
    examples = "".join(
        f"Example {i + 1}\nInput: {grid_in}\nOutput: {grid_out}\n\n"
        for i, (grid_in, grid_out) in enumerate(pairs)
    )
    return f"{ARC_HEADER}{RULE}{examples}\n{RULE}{ARC_SOLVE}{RULE}{test_input}\n{RULE}"


def convert_arcagi(row: dict[str, Any], options: ConvertOptions) -> Item:
    train, test = _plain(row["train"]), _plain(row["test"])
    if not test:
        raise Unextractable("no test pair")
    pairs = [(pair["input"], pair["output"]) for pair in train[:MAX_EXAMPLES]]
    return Item(_arc_question(pairs, test[0]["input"]), test[0]["output"])


def _int_grid(grid: Any) -> list[list[int]]:
    return [[int(float(x)) for x in row] for row in grid]


def convert_barc(row: dict[str, Any], options: ConvertOptions) -> Item:
    examples = _plain(row["examples"])
    if len(examples) < 2:
        raise Unextractable("fewer than two examples (one is the test)")
    shown = min(len(examples) - 1, MAX_EXAMPLES)
    pairs = [(_int_grid(i), _int_grid(o)) for i, o in examples[:shown]]
    test_in, test_out = examples[shown]
    return Item(_arc_question(pairs, _int_grid(test_in)), _int_grid(test_out))


def _literal(value: Any) -> Any:
    """A dict or list as given, else read from its JSON or Python-literal text (never run)."""
    value = _plain(value)
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise Unextractable(f"cannot read the ground truth {value[:60]!r}") from exc


def convert_zebra(row: dict[str, Any], options: ConvertOptions) -> Item:
    clues = _plain(row["clues"])
    clues = "\n".join(clues) if isinstance(clues, list) else str(clues)
    grid = _literal(row["ground_truth"])
    if not isinstance(grid, dict) or "rows" not in grid or "header" not in grid:
        raise Unextractable("the ground truth is no {header, rows} grid")
    question = f"{text_field(row, 'instruction')} The clues are: {clues}."
    return Item(question, grid, {"raw_instruction": row["instruction"], "raw_input": clues})


def convert_ordering(row: dict[str, Any], options: ConvertOptions) -> Item:
    names = _literal(row["ground_truth"])
    if not isinstance(names, list) or not names:
        raise Unextractable("the ground truth is no list of names")
    question = f"{text_field(row, 'instruction')}. The constraints are: {_plain(row['input'])}."
    return Item(question, [str(n) for n in names], {"num_objects": len(names)})


def convert_graph(row: dict[str, Any], options: ConvertOptions) -> Item:
    extra = {"lookahead": _plain(row["look_ahead"])} if row.get("look_ahead") is not None else {}
    return Item(text_field(row, "prompt"), text_field(row, "correct_response"), extra)


def convert_livebench(row: dict[str, Any], options: ConvertOptions) -> Item:
    turns = _plain(row["turns"])
    if not turns or row.get("ground_truth") is None:
        raise Unextractable("no turn or no ground truth")
    extra = {"task": str(row["task"]), "prompt": turns}
    for key, name in (("category", "category"), ("livebench_release_date", "date")):
        if row.get(key) is not None:
            extra[name] = str(row[key])
    return Item(str(turns[0]), str(row["ground_truth"]), extra)


def convert_ifeval(row: dict[str, Any], options: ConvertOptions) -> Item:
    prompt = text_field(row, "prompt")
    ids = [str(i) for i in _plain(row["instruction_id_list"])]
    kwargs = _literal(row["kwargs"])
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise Unextractable("kwargs is not one dict per instruction")
    return Item(prompt, kwargs, {"instruction_id_list": ids, "prompt": prompt})


def convert_ifbench(row: dict[str, Any], options: ConvertOptions) -> Item:
    messages = _plain(row["messages"])
    if not messages or row.get("ground_truth") is None:
        raise Unextractable("no message or no ground truth")
    return Item(str(messages[0]["content"]), _plain(row["ground_truth"]))


def convert_stem_web(row: dict[str, Any], options: ConvertOptions) -> Item:
    question = text_field(row, "question").strip()
    extra = {"question": question}
    for key in ("answer_type", "category", "difficulty"):
        if row.get(key) is not None:
            extra[key] = str(row[key])
    return Item(question, text_field(row, "answer"), extra)
