"""How a record's prompt becomes the text the policy reads (``TaskSpec.prompt_format``): a problem in Qwen2.5-Math's
evaluation format, chat messages through the tokenizer's chat template, a text as the user's turn of a chat, or the
row's text as it is."""

from __future__ import annotations

import contextlib
import datetime
import threading
from typing import Any

# TaskSpec.prompt_format: Qwen2.5-Math's evaluation format, as given, or a text as the user's turn of a chat
PROMPT_FORMATS = ("math", "as_is", "chat")
QWEN_MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# The date a chat template that prints one is given (Llama 3.x's write today's into the system turn unless told; this
# is their own fallback): a prompt renders the same every day, so a run resumes the next day on the same data
CHAT_DATE = "26 Jul 2024"


_CLOCK = threading.RLock()


class _OnChatDate(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls.strptime(CHAT_DATE, "%d %b %Y")


@contextlib.contextmanager
def _chat_date():
    """transformers' ``strftime_now`` (a template global Mistral-Small-3's template calls for its default system
    message) reads ``datetime.now()`` in ``transformers.utils.chat_template_utils``; a template's arguments cannot
    replace it (they are reduced to plain JSON values). There, for the block, the clock reads ``CHAT_DATE`` (for other
    threads' templates too: renders wait for each other); where that module reads the clock otherwise (another
    transformers), the test of this fails and prompts keep today's date."""
    from transformers.utils import chat_template_utils

    with _CLOCK:  # one render at a time sets it (threads: one restored the clock under another's render, review)
        real = getattr(chat_template_utils, "datetime", None)
        if real is not datetime.datetime:  # set already (a render inside a render), or another transformers
            yield
            return
        chat_template_utils.datetime = _OnChatDate
        try:
            yield
        finally:
            chat_template_utils.datetime = real


def apply_chat_template(tokenizer: Any, messages: list[dict], **kwargs) -> str:
    """``tokenizer.apply_chat_template`` to text, on ``CHAT_DATE``: the prompts were rendered with today's date,
    and a run preempted before midnight was refused the next day (its data fingerprint had changed). Llama 3.x's
    templates read ``date_string``; others call ``strftime_now`` (:func:`_chat_date`)."""
    with _chat_date():
        return tokenizer.apply_chat_template(messages, tokenize=False, date_string=CHAT_DATE, **kwargs)


def format_prompt(problem: str, tokenizer: Any = None, *, instruction: str = QWEN_MATH_INSTRUCTION) -> str:
    """The text the policy sees for a problem, following Qwen2.5-Math's evaluation prompt.

    With a chat template: the instruction as the system turn and the problem as the user turn, then the assistant
    header (exactly Qwen2.5-Math-Instruct's CoT setup). Templates that reject a system turn get the instruction
    appended to the user turn instead. Without a chat template (base models, tests): plain text.
    """
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return f"{problem}\n{instruction}\n"
    import jinja2

    def render(messages):
        return apply_chat_template(tokenizer, messages, add_generation_prompt=True)

    try:
        return render([{"role": "system", "content": instruction}, {"role": "user", "content": problem}])
    except jinja2.TemplateError:  # e.g. Gemma/Mistral templates raise "System role not supported"
        return render([{"role": "user", "content": f"{problem}\n{instruction}"}])


def format_records(records: list[dict], tokenizer: Any, prompt_format: str) -> list[dict]:
    """Records with their prompt rendered for the policy (``TaskSpec.prompt_format``): "math" through
    :func:`format_prompt`, "as_is" through :func:`render_messages`, "chat" as "as_is" with a text prompt made the
    user's message. Chat messages go through :func:`render_messages` under each: they are already the conversation
    the policy continues, and are kept as the record's ``prompt_messages`` for reward functions
    (``rewards.registry``)."""
    import jinja2

    from rlvjax.rewards.registry import MESSAGES

    if prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_format 'chat' renders each prompt with the tokenizer's chat template and this "
                         "tokenizer has none; use prompt_format 'as_is' (text verbatim) or a chat model")

    def render(record: dict):
        prompt, math = record["prompt"], prompt_format == "math" and isinstance(record["prompt"], str)
        if prompt_format == "chat" and isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        try:
            text = format_prompt(prompt, tokenizer) if math else render_messages(prompt, tokenizer)
        except jinja2.TemplateError as e:  # the template's own refusal ("roles must alternate"), or its syntax
            raise ValueError(f"the prompt of record {record.get('id')!r} cannot be rendered with the tokenizer's chat "
                             f"template ({e}); give messages the template accepts (e.g. alternating user/assistant "
                             "turns, no system turn where it has none), or use a model whose template takes them"
                             ) from None
        try:  # JSON's "\ud800" escape reads as a lone surrogate, which no tokenizer takes (a TypeError)
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"the prompt of record {record.get('id')!r} is not valid Unicode ({text[e.start]!r} at "
                             f"character {e.start}, a lone surrogate); fix the row's text") from None
        return text

    # the messages stay beside their text: reward functions get them, as TRL passes conversational prompts
    return [{**r, "prompt": render(r), **({MESSAGES: r["prompt"]} if isinstance(r["prompt"], list) else {})}
            for r in records]


def render_messages(prompt: str | list[dict], tokenizer: Any) -> str:
    """A prompt as the policy reads it under ``prompt_format="as_is"``: a string verbatim; chat messages
    (``[{"role", "content"}, ...]``) rendered with the tokenizer's chat template and the assistant header, or, when
    the last message is the assistant's, with that message left open for the completion to continue."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("a prompt is a list of chat messages but the tokenizer has no chat template; give prompts "
                         "as strings or use a chat model")
    if prompt and prompt[-1].get("role") == "assistant":  # a prefilled reply (TRL's convention): continued
        return apply_chat_template(tokenizer, prompt, continue_final_message=True)
    return apply_chat_template(tokenizer, prompt, add_generation_prompt=True)
