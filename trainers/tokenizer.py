"""A small tokenizer built here (no hub): byte-level BPE trained on the exported texts, with a
ChatML chat template, wrapped as a `PreTrainedTokenizerFast` and saved to a directory that
every trainer loads like a model's tokenizer. Runs inside a trainer's environment."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
END_OF_TURN = "<|im_end|>"


def texts_of(rows_file: Path) -> Iterable[str]:
    for path in sorted(rows_file.glob("train-*.jsonl")):
        for line in path.read_text().splitlines():
            for message in json.loads(line)["messages"]:
                yield message["content"]


def build(corpus_dir: Path, out: Path, vocab_size: int = 4000):
    """Train the tokenizer on the training shards in `corpus_dir` and save it to `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(texts_of(corpus_dir), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=END_OF_TURN, pad_token="<|endoftext|>", bos_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return tokenizer


def tiny_model(tokenizer, out: Path | None = None):
    """A randomly initialised 1-layer Llama of this vocabulary (trainers need a model object)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    if out is not None:
        model.save_pretrained(out)
    return model
