"""Make a random-weight Qwen2-architecture model with a locally trained BPE tokenizer.

    python3 benchmarks/gpu/mkmodel.py OUT_DIR [layers hidden inter heads kv_heads]

Defaults give about 0.39B parameters; `28 1536 8960 12 2` gives about 1.36B. Random weights rarely
emit EOS, so throughput runs use ignore_eos. Nothing is downloaded: the tokenizer is trained on the
Python standard library's sources.
"""

import glob
import os
import sys
import sysconfig

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM


def main() -> None:
    out = sys.argv[1]
    layers, hidden, inter, heads, kv = (int(x) for x in (sys.argv[2:7] or [24, 896, 4864, 14, 2]))
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True))[:600]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train(files, trainers.BpeTrainer(
        vocab_size=32000, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(out)
    vocab = ((len(fast) + 127) // 128) * 128
    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=32768,
        rope_theta=1e6, tie_word_embeddings=True,
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"model {out}: {params / 1e6:.0f}M parameters, vocab {vocab}", flush=True)


if __name__ == "__main__":
    main()
