"""Problem records from local files or `datasets`: ``{"prompt", "gold", "level", "id", ...}`` plain dicts.

Every source (Hendrycks MATH, MATH-500, AIME, a generic prompt/gold file) is mapped to the same four fields so the
pipeline, the grader and the evaluator never need to know where a problem came from; the row's other columns are kept
as they are, for reward functions that read them. Data for a reward other than the math grader may have no gold
answer (``require_gold=False``). ``prompt`` is the row's own ``prompt`` when it has one (text or chat messages, as
TRL's datasets put it beside ``problem`` and ``answer``), else the raw problem text; chat formatting is applied later
by ``prompts.format_records``, once the tokenizer is known.

Errors are one line naming the file, the row and the fix, because a bad data file is the most common way a long
training run dies in its first minute.
"""

from __future__ import annotations

import codecs
import dataclasses
import decimal
import json
import logging
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from rlvjax import atomic

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")

# schema -> (problem fields, gold fields, level field); the first field present in a row wins. MATH's gold is not a
# field but the last \boxed{} of its solution, marked by the "solution" gold field (see `_gold`).
SCHEMAS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "math": (("problem", "prompt", "question"), ("solution",), "level"),
    "math500": (("problem",), ("answer",), "level"),
    "aime": (("problem",), ("answer",), None),
    "generic": (("prompt", "question"), ("gold", "answer"), "level"),
    "prompt": (("prompt", "question", "problem"), (), "level"),  # no gold (require_gold=False)
}

ID_FIELDS = ("id", "unique_id")


@dataclasses.dataclass(frozen=True)
class LoadStats:
    """What a load kept and dropped, so a caller can log it instead of silently training on less data."""

    source: str
    schema: str
    rows: int
    kept: int
    skipped_bad_gold: int
    bad_gold_rows: tuple[str, ...] = ()  # where the skipped rows were ("line 7", "row 12"), for the log


def load_records(
    path_or_id: str | os.PathLike,
    *,
    fmt: str | None = None,
    split: str = "train",
    name: str | None = None,
    on_bad_gold: str = "skip",
    require_gold: bool = True,
    split_knob: str | None = "split=",
    name_knob: str = "name=",
) -> tuple[list[dict], LoadStats]:
    """Loads problems as ``[{"prompt", "gold", "level", "id"}]`` from a .jsonl/.json/.parquet file or `datasets`.

    ``path_or_id`` is a local file, a local dataset directory, or a `datasets` hub id (read from the local cache when
    HF_DATASETS_OFFLINE=1). ``fmt`` names the schema (one of ``SCHEMAS``: "math" takes the gold from the solution's
    last ``\\boxed{}``, "math500"/"aime"/"generic" from an answer field); None detects it from the first row's fields.
    ``split`` and ``name`` (the dataset config, e.g. a MATH subject) only apply to `datasets` sources (a missing split
    is refused naming ``split_knob``, the caller's way to choose one (None: there is none, the training data is
    the "train" split); a missing config, listing the dataset's, naming
    ``name_knob``). Rows whose gold cannot be determined are
    skipped and counted (``on_bad_gold="skip"``) or raise (``"error"``).
    ``require_gold=False`` (a reward that reads other columns): a row needs only a problem; a gold answer is kept
    when the schema has one.
    """
    if on_bad_gold not in ("skip", "error"):
        raise ValueError(f"on_bad_gold={on_bad_gold!r}; use 'skip' or 'error'")
    if fmt is not None and fmt not in SCHEMAS:
        raise ValueError(f"fmt={fmt!r} is not a known schema; use one of {sorted(SCHEMAS)} or None to auto-detect")
    source = os.fspath(path_or_id)
    rows, places = _read_rows(source, split, name, split_knob, name_knob)
    return from_rows(rows, places, source=source, fmt=fmt, on_bad_gold=on_bad_gold, require_gold=require_gold)


def from_rows(rows: list[dict], places: list[str] | None = None, *, source: str = "the dataset", fmt=None,
              on_bad_gold: str = "skip", require_gold: bool = True) -> tuple[list[dict], LoadStats]:
    """:func:`load_records` for rows already in memory (a list of dicts, a ``datasets.Dataset``); ``places`` name
    them in errors (default "row N")."""
    rows = list(rows)
    if any(not isinstance(row, dict) for row in rows):
        raise ValueError(f"{source}: rows must be dicts (column -> value)")
    places = places or [f"row {i + 1}" for i in range(len(rows))]
    if not rows:
        raise ValueError(f"{source} has no rows; point at a file or split with at least one problem")
    schema = fmt or detect_schema(rows[0], source, places[0], require_gold)
    stem = Path(source).stem if Path(source).suffix in FILE_SUFFIXES else Path(source).name
    records, bad = [], []
    for index, (row, place) in enumerate(zip(rows, places)):
        record = to_record(row, schema, source=source, place=place, default_id=f"{stem}-{index}",
                           require_gold=require_gold)
        if record is None:
            if on_bad_gold == "error":
                raise ValueError(
                    f"{source}: {place} has no usable gold answer for schema {schema!r}; "
                    "fix the row or pass on_bad_gold='skip'"
                )
            bad.append(place)
        else:
            records.append(record)
    if not records:
        raise ValueError(f"{source}: none of its {len(rows)} rows has a usable gold answer for schema {schema!r}; "
                         f"give each row {_gold_hint(schema)}")
    stats = LoadStats(source, schema, len(rows), len(records), len(bad), tuple(bad))
    if bad:  # said where every caller's log shows it, not only in the stats a caller may drop
        logging.getLogger(__name__).warning(
            "%s: skipped %d of %d rows with no usable gold answer for schema %r (%s%s); give them %s or remove them",
            source, len(bad), len(rows), schema, ", ".join(bad[:5]), ", ..." if len(bad) > 5 else "",
            _gold_hint(schema))
    return records, stats


def _gold_hint(schema: str) -> str:
    """What a row of ``schema`` needs for a usable gold answer (``_gold``)."""
    from rlvjax.rewards.answers import MAX_ANSWER_CHARS

    if schema == "math":
        return "a \\boxed{} answer in 'solution'"
    fields = " or ".join(repr(f) for f in SCHEMAS[schema][1])
    return (f"an answer in {fields} (the answer itself, not a sentence or a working; not empty, braces balanced, "
            f"at most {MAX_ANSWER_CHARS} characters)")


def absolute(path_or_id) -> str:
    """A local file or directory as an absolute path, "~" expanded (a config naming it is read from other
    directories, and by other users); a hub or datasets id as given."""
    path = Path(path_or_id).expanduser()
    return str(path.absolute()) if path.exists() else str(path_or_id)


def write_jsonl(path, records: list[dict]) -> None:
    """Records as a .jsonl file :func:`load_records` reads back (written whole or not at all); numpy values as the
    Python numbers and lists they hold."""
    atomic.write_text(path, "".join(json.dumps(r, default=_plain) + "\n" for r in records))


def json_rows(records: list[dict], name: str) -> list[dict]:
    """``records`` as :func:`write_jsonl` writes them and :func:`load_records` reads them back (numpy values as the
    Python numbers and lists they hold), so a run on in-memory rows sees what its resume will read; a one-line
    ValueError names the first row and column that JSON cannot hold."""
    rows = []
    for i, row in enumerate(records):
        try:
            rows.append(json.loads(json.dumps(row, default=_plain)))
        except (TypeError, ValueError):
            for column, value in row.items():  # which one
                try:
                    json.dumps(value, default=_plain)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{name} row {i}, column {column!r}: {type(value).__name__} cannot be written "
                                     f"as JSON ({e}); convert it to text, numbers, lists or dicts") from None
            raise
    return rows


def _plain(value):
    import numpy as np

    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def detect_schema(row: dict, source: str = "<rows>", place: str = "row 1", require_gold: bool = True) -> str:
    """Names the schema of a row from its fields: answer beats solution because MATH-500 carries both."""
    keys = set(row)
    if not require_gold and not keys & {"gold", "answer"}:  # a reward that reads other columns
        if keys & {"prompt", "question"} or ("problem" in keys and "solution" not in keys):  # problem+solution: MATH
            return "prompt"
    if "problem" in keys and "answer" in keys:
        return "math500" if "level" in keys else "aime"
    if keys & {"prompt", "question"} and keys & {"gold", "answer"}:
        return "generic"
    if keys & {"problem", "prompt", "question"} and "solution" in keys:  # TRL's prompt + solution too
        return "math"
    has_prompt = bool(keys & {"problem", "prompt", "question"})
    raise ValueError(
        f"{source}: cannot tell the schema from the fields of {place} {sorted(keys)}; expected "
        "problem|prompt|question + solution (MATH: the gold is the solution's last \\boxed{}), problem+answer "
        "(MATH-500/AIME) or prompt|question + gold|answer (what the 'math' reward grades against); rename the "
        + ("fields, or grade with a reward of your own that reads them (reward_funcs= / TaskSpec.rewards; evaluate: "
           "--reward)" if has_prompt else "fields (the problem must be in a prompt, question or problem field)")
    )


def to_record(row: dict, schema: str, *, source: str, place: str, default_id: str,
              require_gold: bool = True) -> dict | None:
    """Maps one raw row to a record; None when its gold cannot be determined (empty answer, no \\boxed{}) and
    ``require_gold`` (else the record keeps ``gold: None``)."""
    problem_fields, gold_fields, level_field = SCHEMAS[schema]
    # A row's own prompt is its prompt under any schema (TRL's layout: chat messages beside problem and answer).
    problem_field = "prompt" if row.get("prompt") is not None else \
        _first_field(row, problem_fields, source, place, schema)
    prompt = row[problem_field]
    messages = isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt)
    if not messages and (not isinstance(prompt, str) or not prompt.strip()):
        raise ValueError(f"{source}: {place} has an empty problem or one that is neither text nor chat messages "
                         f"([{{'role': ..., 'content': ...}}]): {prompt!r}; fix or drop the row")
    # Without require_gold a row needs only a problem: a missing answer is a null one
    missing = not require_gold and not any(field in row for field in gold_fields)
    gold = _gold(row[_first_field(row, gold_fields, source, place, schema)], from_solution=schema == "math") \
        if gold_fields and not missing else None
    if gold is None and gold_fields and require_gold:
        return None
    if not require_gold and "gold" in row:  # a reward of the user's reads its own gold column as the row holds it
        gold = row["gold"]  # (a list of test cases, a long reference text, "... #### 7" whole)
    level = _level(row.get(level_field)) if level_field else None
    row_id = next((row[f] for f in ID_FIELDS if row.get(f) is not None), default_id)
    columns = {k: v for k, v in row.items() if k != problem_field}  # for reward functions that read them
    return {**columns, "prompt": prompt, **({"gold": gold} if gold_fields else {}), "level": level,
            "id": str(row_id)}


def _first_field(row: dict, fields: tuple[str, ...], source: str, place: str, schema: str) -> str:
    """The first of ``fields`` with a value (not null, not blank text), else the first present (a null gold is a bad
    gold, not a bad row)."""
    present = [field for field in fields if field in row]
    if present:
        return next((field for field in present if row[field] is not None
                     and not (isinstance(row[field], str) and not row[field].strip())), present[0])
    raise ValueError(f"{source}: {place} lacks field {' or '.join(map(repr, fields))}; add it (the rows are read "
                     f"as the {schema!r} schema, whose fields every row needs)")


def _gold(value: Any, *, from_solution: bool) -> str | None:
    """Gold answer text; for MATH the content of the solution's last \\boxed{} (``answers.boxed_answer``), else,
    for a solution that is a bare answer (TRL's layout) or ends "The answer is X", that answer where it reads as a
    formula (words are no gold); from an answer column, the answer it states (``_answer_field``: GSM8K's after
    "#### ", none from a sentence).
    None where no completion could be graded equal to it (longer than the grader's ``MAX_ANSWER_CHARS``, or
    unbalanced braces)."""
    if from_solution:
        from rlvjax.rewards.answers import as_answer, boxed_answer, is_formula  # lazy: only MATH's schema

        boxed = boxed_answer(value)  # "the answer is 3 since it works" is no box: no longer the gold, unchecked
        # TRL's layout (what its accuracy_reward reads): the solution is the bare answer; words without a box are none
        bare = as_answer(value, completion=True) if boxed is None and isinstance(value, str) else None
        value = boxed if boxed is not None else bare if bare is not None and is_formula(bare) else None
    elif isinstance(value, str):
        value = _answer_field(value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (numbers.Real, decimal.Decimal)) and not math.isfinite(value):
        return None  # a NaN or infinite number (pandas' missing value) is no answer
    if isinstance(value, numbers.Integral):  # numpy's too (numpy-built rows, a with_format("numpy") dataset)
        value = int(value)
    elif isinstance(value, numbers.Real):  # AIME answers stored as floats by some parquet exports are ints
        # Without an exponent ('1e-05' reads as 1 * e - 5), in the value's own precision (a float32's 0.1, not
        # 0.10000000149011612)
        value = int(value) if float(value).is_integer() else np.format_float_positional(value, trim="-")
    elif isinstance(value, decimal.Decimal):
        value = format(value, "f")  # a decimal column's 1.0E-7 is 0.00000010
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    from rlvjax.rewards.answers import MAX_ANSWER_CHARS, braces_balanced

    if len(text) > MAX_ANSWER_CHARS or not braces_balanced(text):  # no completion could ever be graded right
        return None
    return text or None


_ANSWER_LABEL = re.compile(r"\**\s*(?:final\s+)?answer\s*\**\s*:\s*\**\s*", re.IGNORECASE)  # "**Answer:** 12"


def _answer_field(text: str) -> str | None:
    """An answer column's gold: what follows GSM8K's "#### " (after its rationale, or alone) or an "Answer:" label;
    None for a sentence or a working that states no answer (``answers.is_sentence``: "Therefore the total is 12
    apples.": the math reward read the whole text as the answer and graded every right completion wrong). A box or
    "The answer is X" in it is kept as it is: grading reads the answer from it."""
    from rlvjax.rewards.answers import extract_answer, is_sentence

    text = text.rsplit("\n#### ", 1)[1] if "\n#### " in text else text.strip().removeprefix("#### ")
    if label := _ANSWER_LABEL.match(text.strip()):
        text = text.strip()[label.end() :]
    return None if extract_answer(text) is None and is_sentence(text) else text


def _level(value: Any) -> int | None:
    """Difficulty 1-5 from MATH-500's int or Hendrycks MATH's "Level 3"; "Level ?" and junk give None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):  # numpy's too
        return int(value)
    if isinstance(value, numbers.Real):  # a pandas column with gaps holds 3.0 and NaN
        return int(value) if float(value).is_integer() else None
    match = re.fullmatch(r"\s*(?:level\s*)?(\d+)\s*", value, re.IGNORECASE) if isinstance(value, str) else None
    return int(match.group(1)) if match else None


def _read_rows(source: str, split: str, name: str | None, split_knob: str, name_knob: str
               ) -> tuple[list[dict], list[str]]:
    """Raw rows plus where each came from ("line 3" for JSON lines, "row 3" otherwise), for error messages."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix == ".jsonl":
            return _read_jsonl(path)
        if path.suffix == ".json":
            rows = _read_json(path)
            if rows is None:  # JSON Lines named .json, as many hub datasets ship them (and `datasets` reads them)
                return _read_jsonl(path)
        elif path.suffix == ".parquet":
            rows = _read_parquet(path)
        else:
            raise ValueError(
                f"{source}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet "
                "(or a datasets id / directory)"
            )
        return rows, [f"row {i + 1}" for i in range(len(rows))]
    if path.suffix in FILE_SUFFIXES or source.startswith((".", "/", "~")) and not path.is_dir():
        raise FileNotFoundError(f"no such data file: {source}; check the path (relative paths start at {os.getcwd()})")
    rows = _read_datasets(source, split, name, split_knob, name_knob)
    return rows, [f"row {i + 1}" for i in range(len(rows))]


def _read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # Windows editors' UTF-8
    if not data.strip():
        raise ValueError(f"{path} is empty; expected one JSON object per line")
    rows, places = [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}: line {number} is not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                "re-encode the file as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: line {number} is not valid JSON ({e.msg} at column {e.colno}); each line must be one object"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {number} is a JSON {type(row).__name__}, expected an object")
        rows.append(row)
        places.append(f"line {number}")
    return rows, places


def _read_json(path: Path) -> list[dict] | None:
    """The file's list of objects; None when it holds one object per line (JSON Lines) instead."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # Windows editors' UTF-8
    if not data.strip():
        raise ValueError(f"{path} is empty; expected a JSON list of objects")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}: line {line} is not UTF-8 (byte 0x{data[e.start]:02x}); re-encode the file as UTF-8"
                         ) from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        first_line = text.lstrip().split("\n", 1)[0]
        if e.msg == "Extra data" and first_line.startswith("{"):  # a value after the first: JSON Lines
            return None
        raise ValueError(f"{path}: line {e.lineno} is not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected a JSON list of objects at the top level (or use .jsonl)")
    return rows


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow
    import pyarrow.parquet

    try:
        return pyarrow.parquet.read_table(path).to_pylist()
    except pyarrow.ArrowException as e:
        raise ValueError(f"{path} is not a readable parquet file ({_first_line(e)})") from None


def _read_datasets(source: str, split: str, name: str | None, split_knob: str, name_knob: str) -> list[dict]:
    """A local dataset directory (save_to_disk or data files) or a hub id, through `datasets`."""
    import datasets

    path = Path(source).expanduser()
    fix = (f"set {split_knob} to one of them" if split_knob else "the training data is read from its 'train' split: "
           "save the data with one, or point at that split's own file or directory")
    saved = path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())
    try:
        if saved:
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(path) if path.is_dir() else source, name, split=split)
    except ValueError as e:
        configs = re.search(r"[Aa]vailable(?: configs)?: (\[[^\]]*\])", str(e))
        if configs or "Config name is missing" in str(e) or "BuilderConfig" in str(e):  # gsm8k's 'main', a subject
            given = f"has no config {name!r}" if name else "needs a config name"
            raise ValueError(f"{source} {given}" + (f"; its configs: {configs.group(1)}" if configs else "")
                             + f"; set {name_knob} to one") from None
        if "split" in str(e).lower():
            raise ValueError(f"{source} has no split {split!r} ({_first_line(e)}); {fix}") from None
        raise ValueError(f"{source}: datasets could not read it ({_first_line(e)})") from None
    except datasets.exceptions.DatasetBuildError as e:  # a bad file in a data directory, files of other columns
        cause = e.__cause__ or e
        raise ValueError(f"{source}: datasets could not read it ({type(cause).__name__}: {_first_line(cause)}); give "
                         "each of its files on its own to find the row at fault") from None
    except (FileNotFoundError, ConnectionError) as e:
        raise FileNotFoundError(
            f"{source} is neither a local file nor a loadable dataset ({_first_line(e)}); "
            "give a .jsonl/.json/.parquet path, or download the dataset and unset HF_DATASETS_OFFLINE"
        ) from None
    if saved and isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{source} has no split {split!r} (its splits: {', '.join(loaded)}); {fix}")
        loaded = loaded[split]
    elif saved and split not in ("train", "test"):  # one dataset: read whole as train or test data, as a file is
        raise ValueError(f"{source} is one dataset, without splits, and {split_knob}={split!r} picks a split: point "
                         f"at the {split} data's own directory or file instead, and leave {split_knob} 'test'")
    return [dict(row) for row in loaded]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
