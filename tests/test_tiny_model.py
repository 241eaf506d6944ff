"""The tiny model learns the demo's task a little, the bundled dataset is the one the code makes."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from rollouts.tiny_model import Addition, build_tiny_model, demo_rows

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_bundled_dataset_is_the_generated_one() -> None:
    bundled = resources.files("rollouts") / "data" / "math_demo.jsonl"
    rows = [json.loads(line) for line in bundled.read_text().splitlines()]
    assert rows == demo_rows()
    assert {r["data_source"] for r in rows} == {"math__additions", "gsm8k_additions"}
    assert sorted({r["extra_info"]["digits"] for r in rows}) == [1, 2, 3, 4]


@pytest.mark.parametrize(("a", "b", "carries"), [(7, 2, 0), (9, 4, 1), (999, 1, 3), (4507, 7667, 3)])
def test_carries_count_columns_that_carry(a: int, b: int, carries: int) -> None:
    assert Addition(a, b, "hash").carries == carries


def _solved(model_dir: Path, items: list[Addition]) -> int:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    solved = 0
    with torch.inference_mode():
        for item in items:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": item.prompt}], add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            out = model.generate(ids, max_new_tokens=10, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            solved += tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == item.answer
    return solved


def test_a_short_training_teaches_small_sums(tmp_path: Path) -> None:
    items = [Addition(a, b, "boxed" if (a + b) % 2 else "hash") for a, b in
             [(1, 2), (3, 4), (5, 2), (2, 6), (4, 4), (7, 1), (6, 3), (2, 2), (8, 1), (3, 5)]]
    random_weights = build_tiny_model(tmp_path / "random")
    assert _solved(random_weights, items) == 0
    steps: list[int] = []
    trained = build_tiny_model(tmp_path / "trained", train_steps=400,
                               on_step=lambda step, total, loss: steps.append(step))
    assert _solved(trained, items) >= 4  # greedy, one-digit sums without carry
    assert steps == list(range(1, 401))  # the progress line hears of every step



def test_training_progress_lines() -> None:
    """A log (not a terminal) gets a line every tenth of the steps, so the minute of training in
    the demo never looks like a hang; a terminal gets one line rewritten in place."""
    import io

    from rollouts.tiny_model import TrainingProgress

    log = io.StringIO()
    progress = TrainingProgress(log, interactive=False)
    for step in range(1, 21):
        progress(step, 20, 1.5)
    lines = log.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("training the tiny model to add: step 2/20, answer loss 1.50, ")
    assert lines[-1].startswith("training the tiny model to add: step 20/20") and "s left" in lines[-1]
    screen = io.StringIO()
    progress = TrainingProgress(screen, interactive=True, every_s=3600)
    for step in range(1, 21):
        progress(step, 20, 1.5)
    assert screen.getvalue().count("\r") == 2 and screen.getvalue().endswith("\n")  # first, last
