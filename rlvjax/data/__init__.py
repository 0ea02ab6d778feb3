"""Problem records (MATH, MATH-500, AIME, generic files) and the resumable grain input pipeline."""

from rlvjax.data.pipeline import DataIterator, make_iterator
from rlvjax.data.prompts import QWEN_MATH_INSTRUCTION, format_prompt
from rlvjax.data.sources import LoadStats, load_records

__all__ = ["DataIterator", "make_iterator", "QWEN_MATH_INSTRUCTION", "LoadStats", "format_prompt", "load_records"]
