"""How a rendered prompt becomes token ids: as transformers' and vLLM's ``generate`` encode a text prompt, with the
special ids the tokenizer puts before a text (Llama's BOS; none for Qwen2), once."""

from __future__ import annotations


def prompt_start(tokenizer) -> list[int]:
    """The ids the tokenizer itself puts before any text (``add_special_tokens=True``), e.g. ``[bos]``."""
    plain = tokenizer.encode("1", add_special_tokens=False)
    full = tokenizer.encode("1", add_special_tokens=True)  # [bos] + plain, or with an eos after it too
    starts = [i for i in range(len(full) - len(plain) + 1) if plain and full[i:i + len(plain)] == plain]
    return full[: starts[0]] if starts else []


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Each prompt's ids, led by ``prompt_start`` unless its text already holds it (a chat template that writes
    ``{{ bos_token }}``); nothing is appended (a prompt is continued, not ended). A problem whose text spells a
    special token ("<|im_end|>") gets that token, as transformers' ``generate`` and TRL encode it: clean such rows
    first where the data is not trusted."""
    start = prompt_start(tokenizer)
    encoded = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    return [ids if ids[: len(start)] == start else start + ids for ids in encoded]
