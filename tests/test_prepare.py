"""`rollouts prepare`: every KIND converts its datasets' real field names into verl's schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from rollouts.cli import main as rollouts_main
from rollouts.errors import UserInputError
from scoring.prepare.build import PrepareOptions, prepare
from scoring.prepare.mix import target_counts
from scoring.prepare.templates import DEFAULT_TEMPLATES, template_hash
from scoring.rewards.registry import dispatch
from tests import prepare_fixtures as fx

VERL_COLUMNS = ["data_source", "prompt", "ability", "reward_model", "extra_info"]


def run(args: list[str]) -> Any:
    return CliRunner().invoke(rollouts_main, ["prepare", *args])  # type: ignore[arg-type]


def prepared(tmp_path: Path, kind: str, rows: list[dict[str, Any]], *extra: str) -> pd.DataFrame:
    source = fx.write_jsonl(tmp_path / f"{kind}_src.jsonl", rows)
    out = tmp_path / f"{kind}_{len(list(tmp_path.iterdir()))}.parquet"
    result = run([kind, str(source), "-o", str(out), *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    frame = pd.read_parquet(out)
    assert list(frame.columns) == VERL_COLUMNS
    return frame


def truths(frame: pd.DataFrame) -> list[Any]:
    return [rm["ground_truth"] for rm in frame["reward_model"]]


def user_text(frame: pd.DataFrame, i: int = 0) -> str:
    return str(frame["prompt"][i][-1]["content"])


def test_gsm8k_takes_the_number_after_hashes_and_keeps_verl_names(tmp_path: Path) -> None:
    source = fx.write_jsonl(tmp_path / "gsm8k_src.jsonl", fx.GSM8K)
    result = run(["gsm8k", str(source), "-o", str(tmp_path / "g.parquet"), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 row(s) without a usable answer (first ids: 2)" in result.output
    frame = pd.read_parquet(tmp_path / "g.parquet")
    assert truths(frame) == ["72", "2400"]
    assert set(frame["data_source"]) == {"openai/gsm8k"} and set(frame["ability"]) == {"math"}
    assert user_text(frame).endswith('output the final answer after "####".')
    info = frame["extra_info"][1]
    assert info["split"] == "test" and info["index"] == 1
    assert info["template"] == DEFAULT_TEMPLATES["gsm8k"]
    assert info["template_hash"] == template_hash(DEFAULT_TEMPLATES["gsm8k"])
    assert frame["reward_model"][0]["style"] == "rule"


def test_math_boxed_solution_and_short_answer_field(tmp_path: Path) -> None:
    frame = prepared(tmp_path, "math", fx.MATH)
    assert truths(frame) == ["\\frac{3}{4}", "5"]
    assert "within \\boxed{}" in user_text(frame)
    assert frame["extra_info"][0]["level"] == "Level 1"
    aime = prepared(tmp_path, "math", fx.MATH500, "--data-source", "HuggingFaceH4/MATH-500")
    assert truths(aime) == ["81"] and aime["extra_info"][0]["id"] == "test/algebra/1.json"
    assert dispatch("math__math_src") == "guru_math"


def test_code_formats_become_tests_the_code_reward_reads(tmp_path: Path) -> None:
    from scoring.code_reward import parse_tests

    sources = {"humaneval": fx.HUMANEVAL, "mbpp": fx.MBPP, "apps": fx.APPS,
               "contests": fx.CODE_CONTESTS, "lcb": fx.LIVECODEBENCH}
    for name, rows in sources.items():
        path = fx.write_jsonl(tmp_path / f"{name}.jsonl", rows)
        out = tmp_path / f"{name}.parquet"
        result = run(["code", str(path), "-o", str(out)])
        assert result.exit_code == 0, (name, result.output, result.exception)
        frame = pd.read_parquet(out)
        assert set(frame["ability"]) == {"code"}
        assert dispatch(frame["data_source"][0]) == "guru_code"
        for rm, info in zip(frame["reward_model"], frame["extra_info"], strict=True):
            parse_tests(rm["ground_truth"], dict(info))  # readable by `score --reward-fn code`
        if name == "humaneval":  # the wrong canonical solution is dropped and counted
            assert len(frame) == 1 and "dropped 1 code item(s)" in result.output
            assert "HumanEval/1" in result.output
        else:
            assert len(frame) == len(rows)
    lcb = pd.read_parquet(tmp_path / "lcb.parquet")
    functional = json.loads(lcb["reward_model"][1]["ground_truth"])
    assert functional == {"inputs": [[[1, 5, 2]]], "outputs": [5], "fn_name": "largest"}
    contests = json.loads(pd.read_parquet(tmp_path / "contests.parquet")["reward_model"][0]
                          ["ground_truth"])
    assert contests["inputs"] == ["2\n", "5\n"]


def test_qa_gold_lists_from_nq_triviaqa_and_squad(tmp_path: Path) -> None:
    assert [list(t) for t in truths(prepared(tmp_path, "qa", fx.NQ))] == [["Thomas Jefferson"]]
    trivia = prepared(tmp_path, "qa", fx.TRIVIAQA)
    assert list(truths(trivia)[0]) == ["Mars", "The Red Planet"]
    squad = prepared(tmp_path, "qa", fx.SQUAD)
    assert list(truths(squad)[0]) == ["Paris"]
    assert "Context: Paris is the capital of France." in user_text(squad)
    assert user_text(squad).startswith("Answer the following question concisely.")


@pytest.mark.parametrize(
    ("rows", "letter", "option"),
    [(fx.MMLU, "B", "B. 4"), (fx.MMLU_PRO, "C", "C. 7"), (fx.ARC, "B", "B. whale"),
     (fx.HELLASWAG, "D", "D. holds a rubik's cube.")],
)
def test_mcq_letters_from_index_letter_and_label(
    tmp_path: Path, rows: list[dict[str, Any]], letter: str, option: str
) -> None:
    frame = prepared(tmp_path, "mcq", rows)
    assert truths(frame) == [letter]
    assert option in user_text(frame) and "Answer with the letter" in user_text(frame)


def test_gpqa_options_are_shuffled_with_the_seed(tmp_path: Path) -> None:
    frame = prepared(tmp_path, "mcq", fx.GPQA)
    letter = truths(frame)[0]
    assert f"{letter}. photon" in user_text(frame)
    again = prepared(tmp_path, "mcq", fx.GPQA)
    assert user_text(again) == user_text(frame)


def test_templates_system_prompt_and_limit(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(20)]
    frame = prepared(tmp_path, "gsm8k", rows, "--template", "Solve: {question}",
                     "--system-prompt", "Be brief.", "--limit", "5", "--seed", "3")
    assert len(frame) == 5
    assert frame["prompt"][0][0] == {"role": "system", "content": "Be brief."}
    assert user_text(frame).startswith("Solve: q")
    again = prepared(tmp_path, "gsm8k", rows, "--limit", "5", "--seed", "3", "--overwrite",
                     "--template", "none")
    assert [user_text(again, i) for i in range(5)] == [
        user_text(frame, i).removeprefix("Solve: ") for i in range(5)
    ]
    appended = prepared(tmp_path, "gsm8k", rows[:1], "--template", "Think.", "--overwrite")
    assert user_text(appended) == "q0 Think."


def test_custom_column_mappings(tmp_path: Path) -> None:
    rows = [{"q": "1+1?", "a": "2", "opts": ["1", "2"], "gold": 1,
             "tests": [{"input": "", "output": "2\n"}]}]
    answer = prepared(tmp_path, "custom", rows, "--question-col", "q", "--answer-col", "a")
    assert truths(answer) == ["2"] and answer["data_source"][0] == "math__custom_src"
    choice = prepared(tmp_path, "custom", rows, "--question-col", "q", "--choices-col", "opts",
                      "--answer-col", "gold", "--overwrite")
    assert truths(choice) == ["B"]
    code = prepared(tmp_path, "custom", rows, "--question-col", "q", "--tests-col", "tests",
                    "--overwrite")
    assert json.loads(truths(code)[0]) == [{"input": "", "output": "2\n"}]


def test_saved_dataset_folder_is_a_source(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "gsm8k_saved"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(fx.GSM8K[:1]),
        "test": datasets.Dataset.from_list(fx.GSM8K[1:2]),
    }).save_to_disk(str(folder))
    result = prepare("gsm8k", str(folder), PrepareOptions(split="train"))
    assert [r["reward_model"]["ground_truth"] for r in result.rows] == ["72"]
    assert result.rows[0]["extra_info"]["split"] == "train"
    with pytest.raises(UserInputError, match=r"several splits in it \(train, test\); pass --split"):
        prepare("gsm8k", str(folder), PrepareOptions())


def test_hub_ids_go_through_the_datasets_library(tmp_path: Path, monkeypatch: Any) -> None:
    """The hub path: `datasets.load_dataset(id)` (here pointed at a local parquet file)."""
    import datasets

    local = fx.write_parquet(tmp_path / "train.parquet", fx.GSM8K[:2])
    calls: list[str] = []
    real = datasets.load_dataset

    def load(hub_id: str) -> Any:
        calls.append(hub_id)
        return real("parquet", data_files={"test": str(local)})

    monkeypatch.setattr(datasets, "load_dataset", load)
    result = prepare("gsm8k", "openai/gsm8k", PrepareOptions(split="test"))
    assert calls == ["openai/gsm8k"] and len(result.rows) == 2


def test_mix_proportions_oversampling_and_capping(tmp_path: Path) -> None:
    math_file = tmp_path / "m.parquet"
    qa_file = tmp_path / "q.parquet"
    rows = [{"problem": f"p{i}", "answer": str(i)} for i in range(40)]
    assert run(["math", str(fx.write_jsonl(tmp_path / "m.jsonl", rows)), "-o",
                str(math_file)]).exit_code == 0
    qa_rows = [{"question": f"q{i}", "answer": [f"a{i}", f"b{i}"]} for i in range(10)]
    assert run(["qa", str(fx.write_jsonl(tmp_path / "q.jsonl", qa_rows)), "-o",
                str(qa_file)]).exit_code == 0
    out = tmp_path / "mix.parquet"
    result = run(["mix", str(math_file), str(qa_file), "--ratio", "1:1", "--size", "30",
                  "-o", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "15 of 40 rows (capped)" in result.output and "15 of 10 rows (oversampled)" in result.output
    frame = pd.read_parquet(out)
    assert len(frame) == 30
    assert frame["data_source"].value_counts().to_dict() == {"math__m": 15, "qa__q": 15}
    qa_truth = [rm["ground_truth"] for rm, ds in zip(frame["reward_model"], frame["data_source"],
                                                     strict=True) if ds == "qa__q"]
    assert all(json.loads(t)[0].startswith("a") for t in qa_truth)  # lists kept as JSON text
    from scoring.rewards.qa import gold_answers
    assert gold_answers(qa_truth[0])[1].startswith("b")
    no_size = run(["mix", str(math_file), str(qa_file), "--equal", "-o", str(tmp_path / "e.jsonl")])
    assert no_size.exit_code == 0 and '"rows": 20' in no_size.output
    assert target_counts([40, 10], [2.0, 1.0], None) == [20, 10]
    assert target_counts([5, 5], [1.0, 1.0, ], 7) == [4, 3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mix", "{m}", "{m}", "--ratio", "2:1:1", "-o", "{o}"],
         "--ratio '2:1:1' has 3 part(s) for 2 input(s); give one per input"),
        (["mix", "{m}", "{m}", "--ratio", "1:x", "-o", "{o}"], "use numbers joined by ':'"),
        (["gsm8k", "{src}", "-o", "{o}"], "gsm8k needs the columns question+answer; it has "
         "level, problem, solution, type. Map yours with: rollouts prepare custom"),
        (["gsm8k", "{bad}", "-o", "{o}", "--strict"], "1 row(s) without a usable answer "
         "(first: 0: no '#### <number>' in the answer); drop --strict"),
        (["mcq", "{src}", "-o", "{o}"], "mcq needs the columns Question+Correct Answer or"),
        (["math", "{m}", "-o", "{o}.txt"], "unknown table format"),
        (["math", "{dir}", "-o", "{o}"], "not a `datasets` save_to_disk folder"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    src = fx.write_jsonl(tmp_path / "src.jsonl", fx.MATH)
    bad = fx.write_jsonl(tmp_path / "bad.jsonl", [fx.GSM8K[2]])
    math_out = tmp_path / "m.parquet"
    assert run(["math", str(src), "-o", str(math_out)]).exit_code == 0
    (tmp_path / "folder").mkdir()
    names = {"src": src, "bad": bad, "m": math_out, "o": tmp_path / "out.parquet",
             "dir": tmp_path / "folder"}
    result = run([a.format(**{k: str(v) for k, v in names.items()}) for a in args])
    assert result.exit_code == 1
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: ") and message in error, error
    if "Map yours" in message:
        assert "--question-col problem --answer-col solution" in error


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    src = fx.write_jsonl(tmp_path / "src.jsonl", fx.MATH)
    out = tmp_path / "out.parquet"
    out.write_text("precious")
    result = run(["math", str(src), "-o", str(out)])
    assert result.exit_code == 1 and "exists; pass --overwrite" in result.output
    assert out.read_text() == "precious"


def test_math_on_gsm8k_rows_takes_the_final_number_not_the_worked_solution(tmp_path: Path) -> None:
    rows = [*fx.GSM8K[:2], {"question": "Long?", "answer": "Step one.\nStep two gives 9 apples."}]
    source = fx.write_jsonl(tmp_path / "worked.jsonl", rows)
    result = run(["math", str(source), "-o", str(tmp_path / "m.parquet")])
    assert result.exit_code == 0, result.output
    assert truths(pd.read_parquet(tmp_path / "m.parquet")) == ["72", "2400"]
    assert "skipped 1 row(s) without a usable answer (first ids: 2)" in result.output
    # --strict names why: a worked solution with no final answer.
    result = run(["math", str(source), "-o", str(tmp_path / "s.parquet"), "--strict"])
    assert result.exit_code == 1 and "worked solution with no '#### N'" in result.output


def test_repeated_prompts_are_dropped_and_counted_so_generate_takes_the_file(tmp_path: Path) -> None:
    rows = [fx.GSM8K[0], fx.GSM8K[1], dict(fx.GSM8K[0], id="again")]
    source = fx.write_jsonl(tmp_path / "dup.jsonl", rows)
    out = tmp_path / "g.parquet"
    result = run(["gsm8k", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "dropped 1 row(s) repeating an earlier prompt (first ids: again)" in result.output
    assert len(pd.read_parquet(out)) == 2
    from rollouts.dataset import load_datasets

    assert load_datasets([out])[0].num_prompts == 2


def test_a_field_of_the_wrong_type_is_an_error_naming_the_row(tmp_path: Path) -> None:
    rows = [fx.GSM8K[0], {"question": ["a", "list"], "answer": "#### 3"}]
    source = fx.write_jsonl(tmp_path / "typed.jsonl", rows)
    out = tmp_path / "t.parquet"
    result = run(["gsm8k", str(source), "-o", str(out)])
    assert result.exit_code == 1
    assert f"{source} row 1 (id 1): field 'question' holds a list" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
