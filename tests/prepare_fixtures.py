"""Small raw datasets with the field names and formats of the public ones they stand for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

GSM8K = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\n48+24 = <<48+24=72>>72\n#### 72"},
    {"question": "A shop sells 1,200 pens a day. How many in 2 days?",
     "answer": "1,200 * 2 = 2,400 pens.\n#### 2,400"},
    {"question": "Broken row: no final answer.", "answer": "It is 5."},
]
MATH = [  # MATH: problem/solution with \boxed; level and type as in the hub copy
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "level": "Level 1", "type": "Prealgebra",
     "solution": "We get $\\frac{2}{4}+\\frac{1}{4}=\\boxed{\\frac{3}{4}}$."},
    {"problem": "Find $x$ if $2x=10$.", "level": "Level 1", "type": "Algebra",
     "solution": "Dividing, $x=\\boxed{5}$."},
]
MATH500 = [  # MATH-500 / AIME style: a short answer field
    {"problem": "Compute $3^4$.", "solution": "$3^4=81$.", "answer": "81", "subject": "Algebra",
     "level": 1, "unique_id": "test/algebra/1.json"},
]
HUMANEVAL = [
    {"task_id": "HumanEval/0", "entry_point": "add",
     "prompt": "def add(a: int, b: int) -> int:\n    \"\"\"Add two numbers.\"\"\"\n",
     "canonical_solution": "    return a + b\n",
     "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n"},
    {"task_id": "HumanEval/1", "entry_point": "sub",
     "prompt": "def sub(a: int, b: int) -> int:\n    \"\"\"Subtract.\"\"\"\n",
     "canonical_solution": "    return a + b\n",  # wrong on purpose: dropped by verification
     "test": "def check(candidate):\n    assert candidate(3, 2) == 1\n"},
]
MBPP = [
    {"task_id": 11, "text": "Write a function to square a number.",
     "code": "def square(x):\n    return x * x", "test_setup_code": "",
     "test_list": ["assert square(2) == 4", "assert square(3) == 9"], "challenge_test_list": []},
]
APPS = [
    {"problem_id": 7, "question": "Read two integers and print their sum.",
     "solutions": json.dumps(["a, b = map(int, input().split())\nprint(a + b)"]),
     "input_output": json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]}),
     "starter_code": "", "difficulty": "introductory"},
    {"problem_id": 8, "question": "Return the double of x.",
     "solutions": json.dumps(["class Solution:\n    def double(self, x):\n        return 2 * x"]),
     "input_output": json.dumps({"fn_name": "double", "inputs": [[2], [5]], "outputs": [4, 10]}),
     "starter_code": "class Solution:\n    def double(self, x):\n", "difficulty": "interview"},
]
CODE_CONTESTS = [
    {"name": "1_A", "description": "Print the input number times three.",
     "public_tests": {"input": ["2\n"], "output": ["6\n"]},
     "private_tests": {"input": ["5\n"], "output": ["15\n"]},
     "generated_tests": {"input": [], "output": []},
     "solutions": {"language": [2, 3], "solution": ["int main(){}", "print(int(input()) * 3)"]}},
]
LIVECODEBENCH = [
    {"question_id": "abc_1", "question_title": "Sum", "platform": "atcoder",
     "question_content": "Given A and B, print A+B.", "starter_code": "",
     "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
     "private_test_cases": "eJyLjgUAARUAuQ==", "metadata": "{}"},
    {"question_id": "lc_2", "question_title": "Max", "platform": "leetcode",
     "question_content": "Return the largest element of nums.",
     "starter_code": "class Solution:\n    def largest(self, nums: List[int]) -> int:\n",
     "public_test_cases": json.dumps([{"input": "[1, 5, 2]", "output": "5", "testtype": "functional"}]),
     "private_test_cases": "", "metadata": json.dumps({"func_name": "largest"})},
]
NQ = [{"question": "who wrote the declaration of independence", "answer": ["Thomas Jefferson"]}]
TRIVIAQA = [
    {"question": "Which planet is known as the red planet?", "question_id": "tc_1",
     "answer": {"value": "Mars", "aliases": ["Mars", "The Red Planet"], "normalized_value": "mars"}},
]
SQUAD = [
    {"id": "56be", "title": "Paris", "context": "Paris is the capital of France.",
     "question": "What is the capital of France?",
     "answers": {"text": ["Paris", "Paris"], "answer_start": [0, 0]}},
]
GPQA = [
    {"Record ID": "rec1", "Question": "Which particle carries the electromagnetic force?",
     "Correct Answer": "photon", "Incorrect Answer 1": "gluon", "Incorrect Answer 2": "W boson",
     "Incorrect Answer 3": "graviton"},
]
MMLU = [{"question": "2 + 2 = ?", "subject": "elementary_mathematics",
         "choices": ["3", "4", "5", "22"], "answer": 1}]
MMLU_PRO = [{"question_id": 70, "question": "Which is a prime?", "options": ["4", "6", "7", "9"],
             "answer": "C", "answer_index": 2, "category": "math"}]
ARC = [{"id": "Mercury_1", "question": "Which is a mammal?",
        "choices": {"text": ["shark", "whale", "trout", "eel"], "label": ["1", "2", "3", "4"]},
        "answerKey": "2"}]
HELLASWAG = [{"ind": 4, "ctx": "A man is sitting on a roof. He", "activity_label": "Roof",
              "endings": ["is using wrap to wrap a pair of skis.", "starts pulling up roofing.",
                          "is ripping level tiles off.", "holds a rubik's cube."],
              "label": "3", "split": "val"}]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
