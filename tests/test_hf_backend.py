"""The in-process transformers backend on a tiny random-weight model built here."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rollouts.errors import UserInputError
from rollouts.hf_backend import HFBackend
from rollouts.tiny_model import build_tiny_model
from rollouts.types import Backend, CompletionBatch, PromptInput, SamplingParams

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "def parse(line):"
SAMPLE = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=12)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> HFBackend:
    return HFBackend(str(model_dir), device="cpu")


def run(
    backend: HFBackend,
    prompt: PromptInput = PROMPT,
    *,
    n: int = 1,
    params: SamplingParams = SAMPLE,
    seed: int | None = 0,
) -> CompletionBatch:
    return asyncio.run(backend.complete(prompt, n=n, params=params, seed=seed))


def texts(batch: CompletionBatch) -> list[str]:
    return [c.text for c in batch.completions]


def test_is_a_backend(backend: HFBackend) -> None:
    typed: Backend = backend
    assert typed.name == "hf"


def test_n_samples_with_token_counts(backend: HFBackend) -> None:
    batch = run(backend, n=3, seed=11)
    assert len(batch.completions) == 3
    assert len(set(texts(batch))) == 3  # never the same seed for every sample
    assert batch.prompt_tokens == len(backend.tokenizer(PROMPT)["input_ids"])
    for completion in batch.completions:
        assert completion.finish_reason == "length"
        assert completion.completion_tokens == SAMPLE.max_tokens
    assert batch.completion_tokens_total == 3 * SAMPLE.max_tokens


def test_each_sample_is_reproducible_alone(backend: HFBackend) -> None:
    """Sample i of a call with seed s is the single sample of a call with seed s + i."""
    together = texts(run(backend, n=3, seed=100))
    alone = [texts(run(backend, n=1, seed=100 + i))[0] for i in range(3)]
    assert together == alone
    assert texts(run(backend, n=3, seed=100)) == together


def test_greedy_ignores_the_seed(backend: HFBackend) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    first = texts(run(backend, n=2, params=greedy, seed=1))
    assert first[0] == first[1]
    assert texts(run(backend, n=1, params=greedy, seed=999)) == first[:1]


def test_top_p_changes_the_distribution(backend: HFBackend) -> None:
    narrow = SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=8)
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    # With top_p this small only the most likely token is left: sampling becomes greedy (the
    # random model's distribution is nearly flat, so a merely small top_p still keeps many).
    assert texts(run(backend, n=2, params=narrow, seed=5)) == texts(run(backend, n=2, params=greedy))


def test_chat_messages_go_through_the_chat_template(backend: HFBackend) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    ids = backend.prompt_ids(messages)
    assert backend.tokenizer.decode(ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    batch = run(backend, messages, n=2, seed=3)
    assert batch.prompt_tokens == len(ids)
    assert len(batch.completions) == 2
    assert texts(batch) != texts(run(backend, "Be brief. hi", n=2, seed=3))


def test_stop_string_cuts_the_text_and_finishes_with_stop(backend: HFBackend) -> None:
    long = SamplingParams(temperature=1.0, max_tokens=24)
    free = texts(run(backend, params=long, seed=21))[0]
    stop = free[len(free) // 2 : len(free) // 2 + 2]
    assert stop.strip(), free
    expected = free[: free.index(stop)]
    params = SamplingParams(temperature=1.0, max_tokens=24, stop=("@@never@@", stop))
    completion = run(backend, params=params, seed=21).completions[0]
    assert completion.text == expected
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens is not None
    assert completion.completion_tokens < 24  # generation stopped early, not only the text


def test_eos_finishes_with_stop_and_is_not_in_the_text(model_dir: Path, tmp_path: Path) -> None:
    """A model whose EOS is a token it generates greedily stops at that token."""
    greedy = SamplingParams(temperature=0.0, max_tokens=10)
    plain = HFBackend(str(model_dir))
    sample = plain._generate(plain.prompt_ids(PROMPT), greedy, None)
    # The first generated token that is new (not a repeat of an earlier one) becomes the EOS; a
    # random model that repeats one token throughout stops at its first.
    stop_at = next((i for i, t in enumerate(sample.token_ids) if i and t not in sample.token_ids[:i]), 0)
    new_eos = sample.token_ids[stop_at]

    eos_model = tmp_path / "eos-model"
    shutil.copytree(model_dir, eos_model)
    config_path = eos_model / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = [plain.tokenizer.convert_tokens_to_ids("<|im_end|>"), new_eos]
    config_path.write_text(json.dumps(config))

    completion = run(HFBackend(str(eos_model)), params=greedy).completions[0]
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens == stop_at + 1  # the EOS token counts, as in vLLM
    assert completion.text == plain.tokenizer.decode(sample.token_ids[:stop_at])


def test_event_loop_stays_free_while_generating(backend: HFBackend) -> None:
    one_by_one = [texts(run(backend, n=2, seed=s)) for s in range(3)]

    async def scenario() -> int:
        ticks = 0
        work = asyncio.gather(
            *(backend.complete(PROMPT, n=2, params=SAMPLE, seed=s) for s in range(3))
        )
        while not work.done():
            ticks += 1
            await asyncio.sleep(0)
        results = await work
        assert [texts(r) for r in results] == one_by_one  # concurrent calls do not mix
        return ticks

    assert asyncio.run(scenario()) > 1


def test_missing_local_model_dir(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no such model directory"):
        HFBackend(str(tmp_path / "absent"))
    with pytest.raises(UserInputError, match="no such model directory"):
        HFBackend("./models/absent")


def test_missing_torch_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(UserInputError) as excinfo:
        HFBackend("any/model")
    assert "pip install torch==2.13.0 && pip install 'rollouts[hf]'" in str(excinfo.value)


HUB_LOAD = """
import asyncio, sys
from rollouts.errors import UserInputError
from rollouts.hf_backend import HFBackend
from rollouts.types import SamplingParams
backend = HFBackend("acme/tiny-chat")
batch = asyncio.run(backend.complete("x", n=1, params=SamplingParams(max_tokens=3), seed=0))
print(batch.completions[0].completion_tokens)
try:
    HFBackend("acme/not-there")
except UserInputError as exc:
    print("refused:", str(exc).splitlines()[0][:60])
"""


def test_hub_id_loads_from_the_hub_cache(model_dir: Path, tmp_path: Path) -> None:
    """A hub id goes to from_pretrained as a hub id: here served from a local hub cache, offline."""
    repo = tmp_path / "hub" / "models--acme--tiny-chat"
    shutil.copytree(model_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", HUB_LOAD], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "3"
    assert lines[1].startswith("refused: acme/not-there: cannot load the model")


def test_a_tiny_model_generates_on_one_thread(model_dir: Path) -> None:
    """Below SMALL_MODEL_PARAMETERS the CPU backend uses one thread (a busy machine otherwise
    makes the demo's model many times slower)."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        HFBackend(str(model_dir), device="cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
