"""Model-judge rewards: GURU's prompts and verdict parsing, and `score` against real HTTP servers on
127.0.0.1 (the OpenAI test server, and the stand-in vLLM started by `--judge-model`)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from rollouts import client
from rollouts.clitools import EXIT_WITH_ERROR_ROWS
from scoring.judge_client import JudgeError, JudgeSettings
from scoring.rewards import judge as judge_module
from scoring.rewards.judge import STEM_PROMPT, MathJudgeReward, StemJudgeReward, stem_verdict
from scoring.score_cli import main
from tests.fake_vllm import FAKE_VLLM_COMMAND, live_pids, recorded_pids
from tests.judge_answers import GARBAGE
from tests.openai_server import FakeOpenAIServer

REFERENCE = Path(__file__).parent / "guru_reference" / "judge_stem.jsonl"
QUESTION = "What is the present value of the four payments?"
VERIFIER = "TIGER-Lab/general-verifier"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)


def reference_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in REFERENCE.read_text().splitlines()]


@pytest.mark.parametrize("row", reference_rows(), ids=lambda r: f"{r['response'][:20]}|{r['judge_text'][:12]}")
def test_prompt_and_verdict_equal_reasoning360(row: dict[str, Any]) -> None:
    """The question GURU's stem_llm_judge sends (or not) for a response, and its verdict on the
    judge's answer. An answer without a decision is 0 there and an error here, by design."""
    reward = StemJudgeReward(JudgeSettings(base_urls=("http://127.0.0.1:9",), model=VERIFIER))
    answer = reward.extract(row["response"]).answer
    payload = row["reference"]["payload"]
    if payload is None:
        assert answer is None
        return
    assert answer is not None
    prompt = STEM_PROMPT.format(
        question=row["extra_info"]["question"], reference=row["ground_truth"], student=answer
    )
    assert prompt == payload["messages"][0]["content"]
    assert payload["temperature"] == 0.0
    assert payload["chat_template_kwargs"] == {"enable_thinking": False}
    if "Final Decision:" in row["judge_text"]:
        assert float(stem_verdict(row["judge_text"])) == row["reference"]["score"]
    else:
        with pytest.raises(JudgeError, match="garbage"):
            stem_verdict(row["judge_text"])


def stem_rows(questions: list[str] | None = None) -> list[dict[str, Any]]:
    responses = [
        ("The value is \\boxed{8,645.09}", "$8,645.09"),  # equal for the judge, not as text
        ("<think>maybe 9000</think>So \\boxed{$8,645.09}.", "$8,645.09"),
        ("The value is \\boxed{9,000}", "$8,645.09"),
        ("I think it is 8,645.09 (no box)", "$8,645.09"),
    ]
    questions = questions or [QUESTION] * len(responses)
    return [
        {"prompt": f"p{i}", "data_idx": i, "sample_idx": 0, "response": response,
         "data_source": "stem_web", "reward_model": {"style": "rule", "ground_truth": gold},
         "extra_info": {"question": question}}
        for i, ((response, gold), question) in enumerate(zip(responses, questions, strict=True))
    ]


def write(rows: list[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def score(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def scored(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path.with_name(f"{path.stem}.scored.parquet"))


def test_stem_web_judged_through_a_server(tmp_path: Path) -> None:
    source = write(stem_rows(), tmp_path / "stem.jsonl")
    with FakeOpenAIServer(model=VERIFIER) as server:
        result = score(source, "--judge-base-url", server.url, "--workers", "1", "--no-cache")
        assert result.exit_code == 0, result.output
        requests = list(server.requests)
    frame = scored(source)
    assert frame["score"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert frame["reward_fn"].tolist() == ["judge"] * 4
    assert frame["score_status"].tolist() == ["ok", "ok", "ok", "no_answer"]
    assert len(requests) == 3  # the unboxed answer is never sent
    for request in requests:
        assert request["model"] == VERIFIER  # asked of /v1/models
        assert request["temperature"] == 0.0
        assert request["chat_template_kwargs"] == {"enable_thinking": False}
        assert request["messages"][0]["content"].startswith(f"User: ### Question: {QUESTION}")


def test_garbage_answers_are_error_rows_and_a_failing_exit(tmp_path: Path) -> None:
    source = write(stem_rows([QUESTION, QUESTION + GARBAGE, QUESTION, QUESTION]), tmp_path / "s.jsonl")
    with FakeOpenAIServer(model=VERIFIER) as server:
        result = score(source, "--judge-base-url", server.url, "--workers", "1", "--no-cache")
    assert result.exit_code == EXIT_WITH_ERROR_ROWS, result.output
    assert "1 rows failed in the reward function (stem_web=1)" in result.output
    frame = scored(source)
    assert frame["score_status"].tolist() == ["ok", "error", "ok", "no_answer"]
    assert "garbage" in frame["score_error"][1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_judge_fails_the_run_never_a_zero(tmp_path: Path) -> None:
    """Every question fails the same way: the run stops with the failure's kind, writing no
    scores (a verdict-less file would read as zeros)."""
    source = write(stem_rows(), tmp_path / "s.jsonl")
    url = f"http://127.0.0.1:{closed_port()}/v1"
    result = CliRunner().invoke(main, [str(source), "--judge-base-url", url, "--judge-model",
                                       VERIFIER, "--judge-max-attempts", "2", "--no-cache"])
    assert result.exit_code != 0
    assert "judge connection" in result.output
    assert not (tmp_path / "s.scored.parquet").exists()


def test_a_second_judge_server_takes_the_questions_of_a_dead_one(tmp_path: Path) -> None:
    source = write(stem_rows(), tmp_path / "s.jsonl")
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    with FakeOpenAIServer(model=VERIFIER) as server:
        result = score(source, "--judge-base-url", dead, "--judge-base-url", server.url,
                       "--judge-model", VERIFIER, "--workers", "1", "--no-cache")
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 3
    assert scored(source)["score"].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_verdicts_are_cached_per_judge_model(tmp_path: Path) -> None:
    source = write(stem_rows(), tmp_path / "s.jsonl")
    cache = tmp_path / "cache"
    with FakeOpenAIServer(model=VERIFIER) as server:
        for _ in range(2):
            result = score(source, "--judge-base-url", server.url, "--cache", cache, "--overwrite")
            assert result.exit_code == 0, result.output
        assert len(server.requests) == 3  # the second run asked nothing
        result = score(source, "--judge-base-url", server.url, "--judge-model", "another-judge",
                       "--cache", cache, "--overwrite")
        assert len(server.requests) == 6  # another judge model is asked again
        assert {r["model"] for r in server.requests[3:]} == {"another-judge"}


def test_a_judged_source_without_a_judge_fails_before_any_work(tmp_path: Path) -> None:
    source = write(stem_rows(), tmp_path / "s.jsonl")
    result = CliRunner().invoke(main, [str(source), "--no-cache"])
    assert result.exit_code != 0
    assert "--judge-base-url" in result.output
    assert not list(tmp_path.glob("s.scored.*"))


def test_judge_model_starts_a_managed_server_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_VLLM_PIDS_FILE", str(pids))
    argv = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_VLLM_ARGV_FILE", str(argv))
    source = write(stem_rows(), tmp_path / "s.jsonl")
    result = score(source, "--judge-model", "tiny-verifier", "--judge-vllm-arg=--max-num-seqs 8",
                   "--workers", "1", "--no-cache")
    assert result.exit_code == 0, result.output
    assert scored(source)["score"].tolist() == [1.0, 1.0, 0.0, 0.0]
    started = recorded_pids(pids)
    assert started and live_pids(started) == []
    served = json.loads(argv.read_text())
    assert "tiny-verifier" in served and "--max-num-seqs" in served


MATH_REFERENCE = Path(__file__).parent / "guru_reference" / "judge_math.jsonl"


@pytest.mark.parametrize(
    "row", [json.loads(line) for line in MATH_REFERENCE.read_text().splitlines()],
    ids=lambda r: f"{r['response'][:20]}|{r['judge_text'][:12]}",
)
def test_math_judge_equals_reasoning360(row: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """GURU's math_llm_judge: whether the judge is asked (its rule graders decide first), the
    prompt, and the verdict on the judge's answer (one without a verdict is an error here)."""
    asked: list[str] = []

    def judge_says(settings: JudgeSettings, prompt: str, extra_body: Any = None) -> str:
        asked.append(prompt)
        return str(row["judge_text"])

    monkeypatch.setattr(judge_module, "ask_judge", judge_says)
    reward = MathJudgeReward(JudgeSettings(base_urls=("http://127.0.0.1:9",), model=VERIFIER))
    answer = reward.extract(row["response"]).answer
    assert answer is not None
    payload = row["reference"]["payload"]
    garbage = payload is not None and "CORRECT" not in row["judge_text"]
    if garbage:
        with pytest.raises(JudgeError, match="garbage"):
            reward.judge(answer, row["ground_truth"], row["data_source"], row["extra_info"])
    else:
        result = reward.judge(answer, row["ground_truth"], row["data_source"], row["extra_info"])
        assert result.score == row["reference"]["score"]
    assert asked == ([payload["messages"][0]["content"]] if payload else [])


def test_math_rows_with_math_llm_judge_go_to_the_judge(tmp_path: Path) -> None:
    extra = {"question": QUESTION, "reward_metric": "math_llm_judge"}
    rows = [
        {"prompt": f"p{i}", "data_idx": i, "sample_idx": 0, "response": response,
         "data_source": "math__combined", "extra_info": extra,
         "reward_model": {"style": "rule", "ground_truth": gold}}
        for i, (response, gold) in enumerate(
            [("\\boxed{blue-whale}", "Blue whale"), ("\\boxed{12}", "13"),
             ("so \\boxed{0.5}", "\\frac{1}{2}")]
        )
    ]
    source = write(rows, tmp_path / "m.jsonl")
    with FakeOpenAIServer(model="Qwen/Qwen2.5-32B-Instruct") as server:
        result = score(source, "--judge-base-url", server.url, "--workers", "1", "--no-cache")
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 2  # 0.5 = 1/2 is decided by the rule graders
        assert all(r["temperature"] == 0.0 for r in server.requests)
    frame = scored(source)
    assert frame["reward_fn"].tolist() == ["math_judge"] * 3
    assert frame["score"].tolist() == [1.0, 0.0, 1.0]


def test_judge_from_a_server_info_file_with_replicas(tmp_path: Path) -> None:
    from server.info import ServerInfo, write_server_info

    source = write(stem_rows(), tmp_path / "s.jsonl")
    with FakeOpenAIServer(model=VERIFIER) as one, FakeOpenAIServer(model=VERIFIER) as two:
        info = write_server_info(tmp_path / "judge.json", ServerInfo(
            base_url=one.url, model=VERIFIER, pid=1, base_urls=(one.url, two.url)))
        result = score(source, "--judge-server-info", tmp_path / "judge.json", "--workers", "1",
                       "--no-cache")
        assert result.exit_code == 0, result.output
        assert len(one.requests) + len(two.requests) == 3
    assert info.model == VERIFIER
    assert scored(source)["score"].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_a_judged_row_without_its_question_fails_before_any_work(tmp_path: Path) -> None:
    rows = stem_rows()
    rows[2]["extra_info"] = {"split": "test"}
    source = write(rows, tmp_path / "s.jsonl")
    with FakeOpenAIServer(model=VERIFIER) as server:
        result = CliRunner().invoke(main, [str(source), "--judge-base-url", server.url, "--no-cache"])
        assert server.requests == []
    assert result.exit_code != 0
    assert "row 2" in result.output and "extra_info['question']" in result.output


def test_an_unreachable_judge_without_a_model_name_is_one_line_before_any_work(
    tmp_path: Path,
) -> None:
    source = write(stem_rows(), tmp_path / "s.jsonl")
    url = f"http://127.0.0.1:{closed_port()}/v1"
    result = CliRunner().invoke(main, [str(source), "--judge-base-url", url, "--no-cache"])
    assert result.exit_code != 0
    assert f"judge server {url} does not say which model it serves" in result.output
    assert "--judge-model NAME" in result.output and "--server-wait" not in result.output
    assert not list(tmp_path.glob("s.scored*"))


def test_questions_go_out_together_under_the_adaptive_limit_with_the_same_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 2 workers, the stand-in vLLM (it reports its load on /metrics) holds every distinct
    question at once, not 2; verdicts are those of asking one question at a time, a garbage
    answer still an error row and a failing exit."""
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.5")
    monkeypatch.setenv("FAKE_VLLM_PEAK_FILE", str(tmp_path / "peak"))
    monkeypatch.setenv("FAKE_VLLM_REQUESTS_FILE", str(tmp_path / "requests.jsonl"))
    answers = [(f"\\boxed{{{i}}}", str(i if i % 3 else i + 1)) for i in range(24)]
    answers += [(answers[0][0], answers[0][1])] * 4  # the same question again: asked once
    answers += [("no box here", "7")]
    rows: list[dict[str, Any]] = [
        {"prompt": f"p{i}", "data_idx": i, "sample_idx": 0, "response": response,
         "data_source": "stem_web", "reward_model": {"style": "rule", "ground_truth": gold},
         "extra_info": {"question": QUESTION + (GARBAGE if i == 5 else "")}}
        for i, (response, gold) in enumerate(answers)
    ]
    source = write(rows, tmp_path / "s.jsonl")
    result = score(source, "--judge-model", "tiny-verifier", "--workers", "2", "--no-cache")
    assert result.exit_code == EXIT_WITH_ERROR_ROWS, result.output
    peak = max(int(p.read_text()) for p in tmp_path.glob("peak.*"))
    assert peak > 2, f"{peak} questions in flight at most"
    assert peak == 24  # every distinct boxed question at once
    asked = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert len(asked) == 24  # each once: the workers judged from the answers, asking nothing
    frame = scored(source)
    with FakeOpenAIServer(model="tiny-verifier") as server:  # one at a time, as the workers asked
        reward = StemJudgeReward(JudgeSettings(base_urls=(server.url,), model="tiny-verifier"))
        expected = []
        for row in rows:
            answer = reward.extract(str(row["response"])).answer
            if answer is None:
                expected.append((0.0, "no_answer"))
                continue
            try:
                verdict = reward.judge(answer, row["reward_model"]["ground_truth"], "stem_web",
                                       row["extra_info"])
                expected.append((verdict.score, "ok"))
            except JudgeError:
                expected.append((0.0, "error"))
    assert list(zip(frame["score"], frame["score_status"], strict=True)) == expected
    assert frame["score_status"].tolist().count("error") == 1
    assert "garbage" in frame["score_error"][5]
