"""A tiny chat model built locally (no download): for tests, demos and benchmarks.

A byte-level BPE tokenizer (digits split one per token) is trained on text that ships with Python,
and a small Qwen2-architecture model is saved beside it, with a chat template. With random weights
(the default) it writes gibberish, which is all the code paths need. `train_steps` teaches it the
demo's task family, additions, for a minute on a CPU: it then solves small sums most of the time
and long ones with many carries rarely, so a demo run shows pass rates across the whole range.
The architecture (head size 64) is one vLLM serves, so the GPU demo samples the same model.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import random
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from rollouts.errors import UserInputError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Training runs on one thread: a model this small gains nothing from a second, and on a busy
# machine threads waiting for each other made it ten times slower (150 steps on 2 loaded cores:
# 35 s on one thread, 393 s on two).
TRAIN_THREADS = 1
DEFAULT_TRAIN_STEPS = 1200  # about a minute on 2 CPU cores (`rollouts make-tiny-model` prints it)

# -- the task family: additions --------------------------------------------------------------

Style = Literal["boxed", "hash"]
# Each style is its own data source, scored by the reward that `score --reward-fn auto` picks.
DATA_SOURCES: dict[Style, str] = {"boxed": "math__additions", "hash": "gsm8k_additions"}
INSTRUCTIONS: dict[Style, str] = {
    "boxed": "Put the final answer in \\boxed{}.",
    "hash": 'Output the final answer after "####".',
}
TRAIN_MAX_DIGITS = 3  # the model learns sums up to three digits ...
DEMO_MAX_DIGITS = 4  # ... and the demo also asks four-digit ones, which it has never seen


@dataclass(frozen=True)
class Addition:
    a: int
    b: int
    style: Style

    @property
    def prompt(self) -> str:
        return f"What is {self.a} + {self.b}? {INSTRUCTIONS[self.style]}"

    @property
    def answer(self) -> str:
        total = self.a + self.b
        return f"\\boxed{{{total}}}" if self.style == "boxed" else f"#### {total}"

    @property
    def digits(self) -> int:
        return max(len(str(self.a)), len(str(self.b)))

    @property
    def carries(self) -> int:
        """Columns that carry: what makes a sum hard, for people and for small models."""
        count, carry, a, b = 0, 0, self.a, self.b
        while a or b:
            carry = int(a % 10 + b % 10 + carry >= 10)
            count += carry
            a, b = a // 10, b // 10
        return count


def random_addition(rng: random.Random) -> Addition:
    digits = rng.randint(1, TRAIN_MAX_DIGITS)
    low, high = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
    style: Style = rng.choice(["boxed", "hash"])
    return Addition(rng.randint(low, high), rng.randint(0, high), style)


def demo_rows(count: int = 24, seed: int = 2024) -> list[dict[str, Any]]:
    """The bundled dataset (rollouts/data/math_demo.jsonl) in verl's schema: additions from one
    digit to four, easy to hard, half of each style."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        digits = 1 + index * DEMO_MAX_DIGITS // count
        low, high = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
        style: Style = "boxed" if index % 2 == 0 else "hash"
        item = Addition(rng.randint(low, high), rng.randint(low, high), style)
        rows.append({
            "data_source": DATA_SOURCES[style],
            "prompt": [{"role": "user", "content": item.prompt}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(item.a + item.b)},
            "extra_info": {"split": "demo", "index": index, "digits": item.digits,
                           "carries": item.carries},
        })
    return rows


def write_demo_dataset(path: str | Path) -> Path:
    out = Path(path)
    out.write_text("".join(json.dumps(row) + "\n" for row in demo_rows()), encoding="utf-8")
    return out


# -- building ---------------------------------------------------------------------------------


def _corpus() -> Iterator[str]:
    """Text that ships with Python, and the chat roles and task phrases, so each is a few tokens."""
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py")))[:40]:
        yield Path(path).read_text(encoding="utf-8", errors="replace")
    phrases = ["user\n", "assistant\n", "system\n", "What is 1 + 2?", *INSTRUCTIONS.values()]
    yield "\n".join(phrases * 200)


def _import_hf() -> tuple[Any, Any, Any]:
    try:
        import tokenizers
        import torch
        import transformers
    except ImportError as exc:
        raise UserInputError(
            "building a tiny model needs the [hf] extra: pip install torch==2.13.0 && "
            "pip install 'rollouts[hf]'"
        ) from exc
    return torch, tokenizers, transformers


def _train_tokenizer(tokenizers: Any, transformers: Any, vocab_size: int) -> Any:
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    # One token per digit: sums are learnt column by column, not from thousands of number tokens.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: str | Path,
    *,
    layers: int = 2,
    hidden: int = 128,
    intermediate: int = 256,
    heads: int = 2,  # head size 64: one every attention backend of vLLM supports
    kv_heads: int = 1,
    vocab_size: int = 2048,
    seed: int = 0,
    train_steps: int = 0,
    on_step: StepCallback | None = None,
) -> Path:
    """Write a tokenizer and a Qwen2 model to out_dir and return its path.

    train_steps > 0 trains it on additions first (see `train_on_additions`); `on_step(step,
    steps, loss)` hears of every step (a progress line)."""
    torch, tokenizers, transformers = _import_hf()
    out = Path(out_dir)
    tokenizer = _train_tokenizer(tokenizers, transformers, vocab_size)
    config = transformers.Qwen2Config(
        vocab_size=((len(tokenizer) + 63) // 64) * 64,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config)
    if train_steps > 0:
        train_on_additions(model, tokenizer, steps=train_steps, seed=seed, on_step=on_step)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out


# -- training ---------------------------------------------------------------------------------


# on_step(step, steps, loss): called after each training step.
StepCallback = Callable[[int, int, float], None]


class TrainingProgress:
    """A progress line for the training: rewritten in place on a terminal, else a line every
    tenth of the steps (a log, CI), so a minute of training never looks like a hang."""

    def __init__(self, stream: TextIO, interactive: bool, every_s: float = 1.0) -> None:
        self.stream, self.interactive, self.every_s = stream, interactive, every_s
        self.started = time.monotonic()
        self.shown_at = -every_s

    def __call__(self, step: int, steps: int, loss: float) -> None:
        now = time.monotonic()
        tenth = max(1, steps // 10)
        due = now - self.shown_at >= self.every_s if self.interactive else step % tenth == 0
        if not (due or step == steps):
            return
        self.shown_at = now
        elapsed = now - self.started
        left = elapsed / step * (steps - step)
        line = (f"training the tiny model to add: step {step}/{steps}, answer loss {loss:.2f}, "
                f"{elapsed:.0f}s, about {left:.0f}s left")
        end = "\n" if step == steps or not self.interactive else ""
        self.stream.write(("\r" if self.interactive else "") + line + end)
        self.stream.flush()


@dataclass(frozen=True)
class TrainReport:
    steps: int
    seconds: float
    final_loss: float


def _encode(tokenizer: Any, item: Addition) -> tuple[list[int], int]:
    """Token ids of one chat (prompt, then the answer and EOS) and where the answer starts."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": item.prompt}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(item.answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, len(prompt_ids)


def _batches(tokenizer: Any, torch: Any, rng: random.Random, size: int) -> Iterator[tuple[Any, Any]]:
    """Endless batches: inputs padded to the longest, labels -100 outside the answers."""
    pad = tokenizer.pad_token_id
    while True:
        encoded = [_encode(tokenizer, random_addition(rng)) for _ in range(size)]
        width = max(len(ids) for ids, _ in encoded)
        inputs = torch.full((size, width), pad, dtype=torch.long)
        labels = torch.full((size, width), -100, dtype=torch.long)
        for row, (ids, start) in enumerate(encoded):
            inputs[row, : len(ids)] = torch.tensor(ids)
            labels[row, start : len(ids)] = torch.tensor(ids[start:])
        yield inputs, labels


def _answer_loss(model: Any, inputs: Any, labels: Any) -> Any:
    """Next-token loss on the answer positions only: the output layer runs on those alone, which
    makes a step a third cheaper than the full-sequence loss."""
    import torch

    hidden = model.model(input_ids=inputs).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    wanted = targets != -100
    return torch.nn.functional.cross_entropy(model.lm_head(hidden[wanted]), targets[wanted])


def train_on_additions(
    model: Any, tokenizer: Any, *, steps: int, seed: int = 0, batch_size: int = 32,
    learning_rate: float = 1e-3, on_step: StepCallback | None = None,
) -> TrainReport:
    """Teach the model to answer addition prompts (loss on the answer only), deterministically
    for a given seed on a given machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _train(model, tokenizer, torch, steps, seed, batch_size, learning_rate, on_step)
    finally:
        torch.set_num_threads(threads)


def _train(
    model: Any, tokenizer: Any, torch: Any, steps: int, seed: int, batch_size: int,
    learning_rate: float, on_step: StepCallback | None,
) -> TrainReport:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.05, 1 - step / steps)
    )
    model.train()
    started = time.monotonic()
    loss = torch.tensor(0.0)
    batches = itertools.islice(_batches(tokenizer, torch, rng, batch_size), steps)
    for step, (inputs, labels) in enumerate(batches, 1):
        loss = _answer_loss(model, inputs, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step, steps, float(loss.item()))
    model.eval()
    return TrainReport(steps, time.monotonic() - started, loss.item())
