"""How a run rendered its prompts and sampled, carried beside each of its exports (``FILE``: the prompt format,
temperature, top-p, top-k and ``max_new_tokens``) and read back by ``python -m rlvjax.evaluate --model_dir``: an API
run's raw prompts were evaluated wrapped in the Qwen2.5-Math chat format the policy never saw (pass@1 0 for 0.24),
at 1.0 for 1024 tokens."""

from __future__ import annotations

import json
from pathlib import Path

from rlvjax.data.prompts import PROMPT_FORMATS
from rlvjax.rewards.registry import MESSAGES
from rlvjax.rl.config import RLConfig

FILE = "rlvjax_sampling.json"


KEY = "prompt_format"  # beside the config stored with each checkpoint: the format its exports record


def rendered_as(task, records: list[dict] = ()) -> str:
    """How the run rendered a text problem, as an evaluation of its policy renders new ones (``task``: its
    ``TaskSpec``; ``records``: its train and eval records): ``TaskSpec.prompt_format`` for data files and the Python
    API's datasets; "chat" where every prompt was chat messages (the policy only ever saw the chat template: a text
    problem is then the user's message, neither read verbatim nor given the Qwen2.5-Math instruction); a generated
    task's prompts are written in the policy's format ("as_is")."""
    if task.name != "file":
        return "as_is"
    if records and all(MESSAGES in r for r in records):
        return "chat"
    return task.prompt_format


def of_checkpoint(stored: dict, run) -> str:
    """The format stored with a checkpoint (its config dict ``stored``, ``run`` the ``Config`` read from it); one
    saved before rlvjax stored it (2026-12-06) gives its task's (:func:`rendered_as` without the records)."""
    return stored.get(KEY) or rendered_as(run.task)


def files(run, prompt_format: str) -> dict[str, str]:
    """``{FILE: text}`` for an export of the run ``run`` (its ``Config``), whose prompts were rendered in
    ``prompt_format`` (:func:`rendered_as`)."""
    trained = {"prompt_format": prompt_format, "temperature": run.rl.temperature, "top_p": run.rl.top_p,
               "top_k": run.rl.top_k, "max_new_tokens": run.rl.max_new_tokens}
    return {FILE: json.dumps(trained, indent=2)}


def load(model_dir) -> dict:
    """``FILE``'s ``prompt_format``, ``temperature``, ``top_p``, ``top_k`` and ``max_new_tokens`` of an rlvjax
    export (one written before top-p and top-k were recorded, 2026-12-07: 1 and 0, as it was evaluated); {} for any
    other HF directory."""
    path = Path(model_dir) / FILE
    if not path.exists():
        return {}
    try:
        saved = {"top_p": 1.0, "top_k": 0, **json.loads(path.read_text(encoding="utf-8"))}
        RLConfig(temperature=saved["temperature"], max_new_tokens=saved["max_new_tokens"], top_p=saved["top_p"],
                 top_k=saved["top_k"])  # their types and ranges
        ok = saved["prompt_format"] in PROMPT_FORMATS
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"{path} is damaged: it needs prompt_format (one of {', '.join(PROMPT_FORMATS)}), "
                         "temperature > 0, top_p in (0, 1], top_k >= 0 and max_new_tokens >= 1; fix it, or delete "
                         "it to evaluate with the flags' defaults")
    return saved
