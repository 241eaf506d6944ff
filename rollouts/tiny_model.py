"""Build a tiny random-weight chat model locally (no download): for tests, demos and benchmarks.

A byte-level BPE tokenizer is trained on text that ships with Python, and a small Qwen2-architecture
model with random weights is saved beside it, with a chat template. Output is gibberish; the point
is that every code path (tokenizer, chat template, generation, EOS) is the real one.
"""

from __future__ import annotations

import glob
import os
import sysconfig
from pathlib import Path

from rollouts.errors import UserInputError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus_files(limit: int) -> list[str]:
    stdlib = sysconfig.get_paths()["stdlib"]
    return sorted(glob.glob(os.path.join(stdlib, "*.py")))[:limit]


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
) -> Path:
    """Write a tokenizer and a random-weight Qwen2 model to out_dir and return its path."""
    try:
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    except ImportError as exc:
        raise UserInputError(
            "building a tiny model needs the [hf] extra: pip install torch==2.13.0 && "
            "pip install 'rollouts[hf]'"
        ) from exc
    out = Path(out_dir)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train(_corpus_files(40), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    padded_vocab = ((len(fast) + 63) // 64) * 64
    config = Qwen2Config(
        vocab_size=padded_vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)
    return out
