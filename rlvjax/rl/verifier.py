"""The verifier half of RL^V (DESIGN.md step 5): verify-prompt tokens, Yes/No ids, labels and scores.

A rollout becomes a verification example by appending `verify_prompt_ids(...)` to prompt + completion; the
model's next token there is trained to be Yes (reward 1) or No (reward 0), and at test time p(Yes) is the score.

Chat tokenizers (those with a `chat_template`) get a new user turn asking the verify question (VERIFY_QUESTION unless
``VerifierConfig.question`` says otherwise) followed by the assistant header, rendered by the tokenizer's own
template, so the question looks like any other turn to the model. Base tokenizers get the plain-text
``base_verify_prompt(question)`` (BASE_VERIFY_PROMPT for the default), after which the answer follows a space (" Yes").
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import jinja2

from rlvjax.data.prompts import apply_chat_template
from rlvjax.fieldtypes import check_field_types

VERIFY_QUESTION = "Is this solution correct (Yes/No)?"


def base_verify_prompt(question: str = VERIFY_QUESTION) -> str:
    """The plain-text verify prompt of base (non-chat) tokenizers."""
    return f"\n\n{question} Answer:"


BASE_VERIFY_PROMPT = base_verify_prompt()


@dataclasses.dataclass(frozen=True)
class VerifierConfig:
    """What the model is asked after a solution, and which rollouts it learns to call correct.

    ``question``: the verify question, identical at training and test time (stored with every checkpoint and in
    the exported model's directory). A rollout is labelled Yes (and counts as correct in every accuracy and vote
    curve) when its reward is >= ``threshold``: the weighted sum of the run's rewards, or with ``label_reward`` the
    one reward that says whether the answer is right, so that a format bonus summed with it shapes the policy but
    not the verifier's labels.
    """

    question: str = VERIFY_QUESTION  # asked after each solution; the model answers Yes or No
    threshold: float = 0.5  # a rollout is labelled Yes when its reward is >= this (binary rewards: 0.5 labels 1 Yes)
    # The reward that labels rollouts, unweighted: a name in TaskSpec.rewards ("math", "my_rewards:accuracy") or the
    # function part of one ("accuracy"); None where it says nothing counts as 0. "": the weighted sum of all rewards.
    label_reward: str = ""
    # How the question follows a solution: "chat", a user turn of the tokenizer's chat template, then the assistant's
    # header; "plain", "\n\nIs this solution correct (Yes/No)? Answer:" after the text (a base model's, or prompts
    # read as plain text); "auto", chat where the tokenizer has a chat template
    form: str = "auto"

    def __post_init__(self):
        check_field_types(self)
        if not self.question.strip():
            raise ValueError("VerifierConfig.question is empty; ask the model something, e.g. "
                             f"{VERIFY_QUESTION!r}")
        if self.form not in FORMS:
            raise ValueError(f"VerifierConfig.form={self.form!r}: use one of {', '.join(FORMS)}")

    @property
    def chat(self) -> bool | None:
        """``form`` as the ``chat`` argument of :func:`tokens` (None: the tokenizer decides)."""
        return {"auto": None, "chat": True, "plain": False}[self.form]


FORMS = ("auto", "chat", "plain")


CONFIG_FILE = "rlvjax_verifier.json"  # beside an exported model: the question it was trained to answer


def config_files(cfg: VerifierConfig) -> dict[str, str]:
    """``{file name: text}`` of ``cfg`` for an exported model's directory (``save_hf(..., files=)``), so that
    evaluating the directory asks the same question. ``label_reward`` and ``form`` are written only where they are
    set: without them the file holds the two fields every earlier rlvjax reads."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("label_reward", "form") or
              v != getattr(VerifierConfig, k)}
    return {CONFIG_FILE: json.dumps(fields, indent=2)}


def load_config(directory) -> VerifierConfig:
    """The :class:`VerifierConfig` saved with a model directory; the default for a directory without one (any HF
    model). Fields this version does not know (a later rlvjax's) are left out, with a warning."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(path):
        return VerifierConfig()
    known = {f.name for f in dataclasses.fields(VerifierConfig)}
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix it, or delete it to ask the default verify "
                         "question") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a JSON {type(saved).__name__}, not an object of {', '.join(sorted(known))}; "
                         "fix it, or delete it to ask the default verify question")
    if unknown := sorted(set(saved) - known):
        print(f"warning: {path}: ignoring {', '.join(unknown)} (written by a later rlvjax; this one reads "
              f"{', '.join(sorted(known))})", flush=True)
    return VerifierConfig(**{k: v for k, v in saved.items() if k in known})


# Any text the template passes through verbatim, used to find where the solution's turn ends in a rendering.
_SENTINEL = "RLVJAX_SOLUTION_SENTINEL_7f3a"


def _is_chat(tokenizer, chat):
    return getattr(tokenizer, "chat_template", None) is not None if chat is None else chat


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _encode_continuation(tokenizer, context: str, text: str) -> list[int]:
    """Tokens of `text` as they appear after `context`. Encoding `text` alone can differ (SentencePiece's
    leading-space marker, BPE merges at the seam), so take the tail of the joint encoding when the context's
    tokens are a prefix of it, and fall back to encoding `text` alone when they are not."""
    ctx, full = _encode(tokenizer, context), _encode(tokenizer, context + text)
    return full[len(ctx):] if full[: len(ctx)] == ctx else _encode(tokenizer, text)


def _chat_renderings(tokenizer, question: str = VERIFY_QUESTION) -> tuple[str, str]:
    """(conversation ending right after the solution, same conversation + verify turn + assistant header)."""
    solved = [{"role": "user", "content": "Solve 1 + 1."}, {"role": "assistant", "content": _SENTINEL}]
    asked = solved + [{"role": "user", "content": question}]
    full = apply_chat_template(tokenizer, asked, add_generation_prompt=True)
    if full.count(_SENTINEL) != 1:
        raise ValueError("the chat template did not render the assistant message verbatim; cannot locate the "
                         "end of the solution turn (fix: pass chat=False to use the plain-text verify prompt)")
    return full[: full.index(_SENTINEL) + len(_SENTINEL)], full


def _end_of_turn(tokenizer, suffix: list[int]) -> int | None:
    """The suffix's first token when it is a special token (<|im_end|>, <|eot_id|>, <end_of_turn>, ...)."""
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return suffix[0] if suffix and suffix[0] in special else None


def verify_prompt_ids(tokenizer, *, chat=None, after_end_of_turn=False, question: str = VERIFY_QUESTION) -> list[int]:
    """Token ids to append after prompt + completion so that the next token is the Yes/No verdict.

    chat=None picks the chat form when the tokenizer has a chat template. Chat form: the template renders
    [user, assistant=SENTINEL, user=question] with the generation prompt, and the ids are the tokens
    after the sentinel: the solution turn's end-of-turn (plus whatever the template puts between turns), the
    verify user turn, and the assistant header. A completion sampled until its stop token already ends with the
    end-of-turn token: pass after_end_of_turn=True to drop it (see `end_of_turn_id`); a truncated one does not.
    Base form: the tokens of ``base_verify_prompt(question)`` (after_end_of_turn is ignored).

    Known seam: a template that rewrites the answer's edges (Llama-2's ``' ' + content.strip() + ' ' + eos``) puts
    text before its end-of-turn token, so the suffix starts with that text and no end of turn is found; a completion
    that ends in whitespace of its own (a ``▁`` before its stop, a newline) then reads one blank more than the
    template renders. Templates that keep the answer verbatim (Qwen, Llama 3, Mistral, SmolLM2) match exactly.
    """
    if not _is_chat(tokenizer, chat):
        return _encode_continuation(tokenizer, "The answer is $\\boxed{2}$.", base_verify_prompt(question))
    before, full = _chat_renderings(tokenizer, question)
    suffix = _encode_continuation(tokenizer, before, full[len(before):])
    if after_end_of_turn and _end_of_turn(tokenizer, suffix) is not None:
        return suffix[1:]
    return suffix


def end_of_turn_id(tokenizer, *, chat=None) -> int | None:
    """The token closing an assistant turn in the chat template (None for base models): a completion ending
    with it takes `verify_prompt_ids(..., after_end_of_turn=True)`. A template that renders no user turn after an
    answer (single-turn ones; a run that verifies in plain text, ``VerifierConfig.form = "plain"``) is read from
    [user, assistant] alone (it failed the run's start)."""
    if not _is_chat(tokenizer, chat):
        return None
    try:
        return _end_of_turn(tokenizer, verify_prompt_ids(tokenizer, chat=True))
    except (ValueError, jinja2.TemplateError):
        answered = [{"role": "user", "content": "Solve 1 + 1."}, {"role": "assistant", "content": _SENTINEL}]
        text = apply_chat_template(tokenizer, answered)
        if text.count(_SENTINEL) != 1:
            raise ValueError("the chat template did not render the assistant message verbatim, so the token that "
                             "ends its turn cannot be found; set the tokenizer's eos_token to it") from None
        before = text[: text.index(_SENTINEL) + len(_SENTINEL)]
        return _end_of_turn(tokenizer, _encode_continuation(tokenizer, before, text[len(before):]))


def _single_token(tokenizer, context: str, word: str) -> int | None:
    ids = _encode_continuation(tokenizer, context, word)
    unk = getattr(tokenizer, "unk_token_id", None)
    return ids[0] if len(ids) == 1 and ids[0] != unk else None


def yes_no_token_ids(tokenizer, *, chat=None, question: str = VERIFY_QUESTION) -> tuple[int, int]:
    """(yes_id, no_id): the single tokens the model emits for "Yes" / "No" right after the verify prompt.

    Both words take the same spelling, the first of two for which each is one known token when encoded in the
    context of the rendered verify prompt: chat form "Yes" then " Yes" (the answer opens the assistant turn),
    base form " Yes" then "Yes" (it follows "Answer:").
    """
    is_chat = _is_chat(tokenizer, chat)
    context = _chat_renderings(tokenizer, question)[1] if is_chat else base_verify_prompt(question)
    prefixes = ("", " ") if is_chat else (" ", "")
    if is_chat and (spelled := _verdict_spacing(tokenizer, context, question)) is not None:
        prefixes = (spelled, *(p for p in prefixes if p != spelled))  # as the template writes an assistant "Yes"
    for prefix in prefixes:
        yes_id, no_id = (_single_token(tokenizer, context, prefix + word) for word in ("Yes", "No"))
        if yes_id is not None and no_id is not None:
            if yes_id == no_id:
                raise ValueError(f"tokenizer maps {prefix + 'Yes'!r} and {prefix + 'No'!r} to the same token id "
                                 f"{yes_id}; fix: use a tokenizer whose vocabulary distinguishes them")
            return yes_id, no_id
    pieces = {p + w: _encode_continuation(tokenizer, context, p + w) for p in prefixes for w in ("Yes", "No")}
    raise ValueError(
        f"tokenizer lacks a single-token Yes/No: after the verify prompt it encodes {pieces} (several tokens or "
        "unknown, for both spellings); fix: use a tokenizer with single-token Yes and No, or add them "
        "(tokenizer.add_tokens + resize the model's embeddings)")


def _verdict_spacing(tokenizer, asked: str, question: str) -> str | None:
    """The whitespace the chat template writes before an assistant turn's "Yes" (Llama-2-chat's and Vicuna-style
    templates: " Yes", which is another token than the "Yes" a ChatML turn opens with), where it renders that turn
    after ``asked`` (the verify prompt rendered with its generation prompt); None where it does not."""
    solved = [{"role": "user", "content": "Solve 1 + 1."}, {"role": "assistant", "content": _SENTINEL},
              {"role": "user", "content": question}, {"role": "assistant", "content": "Yes"}]
    try:
        answered = apply_chat_template(tokenizer, solved)
    except Exception:  # a template that refuses a conversation ending with the assistant (some do): the default
        return None
    gap = answered[len(asked):].split("Yes", 1)[0] if answered.startswith(asked) and "Yes" in answered else None
    return gap if gap is not None and not gap.strip() else None


@dataclasses.dataclass(frozen=True)
class VerifierTokens:
    """What the verifier adds to a sequence: the verify prompt and the two verdict tokens."""

    suffix: tuple[int, ...]  # appended after prompt + completion (without its stop token)
    yes_id: int
    no_id: int


def tokens(tokenizer, question: str = VERIFY_QUESTION, *, chat: bool | None = None) -> VerifierTokens:
    """The verify prompt asking ``question`` and the Yes/No ids, for this tokenizer (``chat``: the chat form,
    ``VerifierConfig.chat``; None where the tokenizer has a chat template).

    The suffix starts with the end-of-turn token for chat models: the sampler drops the stop token from the cache,
    so one suffix serves finished and truncated completions alike.
    """
    if chat and getattr(tokenizer, "chat_template", None) is None:  # transformers' own error named no setting
        raise ValueError("VerifierConfig.form = 'chat' needs a tokenizer with a chat template, and this one has none; "
                         "use 'plain' (or 'auto')")
    yes_id, no_id = yes_no_token_ids(tokenizer, chat=chat, question=question)
    suffix = tuple(verify_prompt_ids(tokenizer, chat=chat, question=question))
    if question not in tokenizer.decode(suffix):  # a tokenizer that drops characters would ask something else
        raise ValueError(f"the tokenizer cannot encode the verify question {question!r} (it reads back as "
                         f"{tokenizer.decode(suffix)!r}); ask it in characters the tokenizer covers "
                         "(VerifierConfig.question)")
    return VerifierTokens(suffix, yes_id, no_id)


def verify_labels(correct, yes_id: int, no_id: int) -> jnp.ndarray:
    """Target token per rollout: Yes where ``correct`` (``Rewards``' verdict: ``VerifierConfig``'s rule), else No."""
    return jnp.where(jnp.asarray(correct), yes_id, no_id).astype(jnp.int32)


def verify_scores(logits, yes_id: int, no_id: int, normalize: bool = False) -> jnp.ndarray:
    """Verifier score p(Yes) from [B, V] logits or log-probs at the verdict position.

    normalize=True gives p(Yes) / (p(Yes) + p(No)) = sigmoid(l_yes - l_no), in which the softmax normaliser
    cancels; it ignores mass the model puts outside the two label tokens.
    """
    logits = jnp.asarray(logits)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    if normalize:
        return jax.nn.sigmoid(logits[:, yes_id] - logits[:, no_id])
    return jnp.exp(jax.nn.log_softmax(logits, axis=-1)[:, yes_id])
