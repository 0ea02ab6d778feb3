"""The tokenizer of the arithmetic task (rlvjax.data.arithmetic): one token per character, a few whole-word tokens.

A model trained from scratch on a CPU in minutes needs short sequences and a small softmax, so the vocabulary is
the task's characters plus whole tokens for the pieces that always appear together:

- ``\\boxed{`` opens every final answer (one token instead of seven);
- BASE_VERIFY_PROMPT, the whole base-mode verify prompt of rlvjax.rl.verifier, is one token, so appending it to
  the sampler's live cache costs one prefill step;
- `` Yes`` / `` No`` (with the space the base verify prompt puts before the verdict) are the verifier's labels.

It is built as a Qwen2 tokenizer without merges (NFC, Qwen2's split regex, byte-level alphabet and decoder).
Why: ``transformers.AutoTokenizer`` loads any directory whose config.json says ``model_type: qwen2`` — what
``rlvjax.save_hf`` writes for our tiny Qwen2 model — with ``Qwen2Tokenizer``, which rebuilds that pipeline from
the saved vocabulary and ignores the one in tokenizer.json. Built this way, the tokenizer encodes identically
whichever class loads it. Without merges every character is its own token; characters outside the vocabulary
are dropped (Qwen2's BPE has no unknown token).

``decode(encode(text)) == text`` for every text over the vocabulary: prompts, solutions, and solution + verify
prompt + verdict. Nothing is added on encoding (no <bos>, as with Qwen2); <eos> is the stop token the trainer
appends to completions; <pad> is id 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from rlvjax.rl.verifier import BASE_VERIFY_PROMPT

if TYPE_CHECKING:  # transformers is imported where a tokenizer is built: 1.2 s off every command's start-up
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0..3; <unk> is named for completeness, never produced
# The space is not used by the task's format; it is in the vocabulary so that spaced text still round-trips.
CHARACTERS = tuple("0123456789") + ("+", "-", "*", "=", "\n", " ", "}")
WORD_TOKENS = ("\\boxed{", BASE_VERIFY_PROMPT, " Yes", " No")

_BYTE_LEVEL = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)


def _byte_level(char: str) -> str:
    """The byte-level alphabet's spelling of a character ("\\n" -> "Ċ", " " -> "Ġ"), as stored in the vocab."""
    return "".join(piece for piece, _ in _BYTE_LEVEL.pre_tokenize_str(char))


def build_tokenizer(verify_prompt: str = BASE_VERIFY_PROMPT) -> PreTrainedTokenizerFast:
    """The task tokenizer, built in memory (no download); ``verify_prompt`` (``base_verify_prompt`` of the run's
    verify question) is its one-token verify prompt."""
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(_byte_level(c) for c in CHARACTERS))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, continuing_subword_prefix="",
                                   end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False), _BYTE_LEVEL])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # Added tokens are matched in the raw text before the model sees it, longest match first.
    words = (WORD_TOKENS[0], verify_prompt, *WORD_TOKENS[2:])
    backend.add_tokens([AddedToken(t, normalized=False) for t in words])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", clean_up_tokenization_spaces=False)


def save_tokenizer(path) -> PreTrainedTokenizerFast:
    """Write the tokenizer (tokenizer.json + tokenizer_config.json) to `path` for AutoTokenizer; returns it."""
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(str(path))
    return tokenizer
