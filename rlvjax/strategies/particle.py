"""Verifier-guided search on partial solutions: particle filtering (Puri et al. 2025) with the model's own verifier
as the potential, and early rejection of the weakest partial solutions.

Each problem has ``ParticleRule.particles`` rows. Every round, each row decodes one more step (up to the next token that
ends with ``step_delimiter``), is scored by the verifier on its live cache (the verify prompt appended after the partial
solution and rolled back: a few prefill tokens per row, no copy), and the rows are resampled within their problem with
weights ``score ** (1 / weight_temperature)``, normalised (``score``: ``Conventions.score``, by default p(Yes) / (p(Yes)
+ p(No))): ``"multinomial"`` draws every row from the weights, ``"reject"`` replaces the ``reject_fraction``
lowest-weight rows by copies of the highest ones and keeps the rest. Finished rows keep their final score and are
resampled like the others while a row of their problem is live; a problem whose rows have all finished is resampled
no more (while other problems of its batch went on, redrawing its finished rows round after round collapsed them onto
one solution, and its answer depended on its batch). After ``max_steps`` rounds (or once every row has finished) the
remaining rows run to the end, and the problem's answer is the verifier-weighted vote of its rows, truncated ones
included as in a fixed-N vote (particles without resampling are that vote). Resampling draws from a numpy generator
seeded by ``seed`` and the batch, so a run is deterministic.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from rlvjax.fieldtypes import check_field_types
from rlvjax.strategies.outcome import Outcome, voted

RESAMPLERS = ("multinomial", "reject")


@dataclasses.dataclass(frozen=True)
class ParticleRule:
    particles: int = 8  # rows per problem
    step_delimiter: str = "\n\n"  # a step ends on any token whose text ends with this
    max_steps: int = 32  # resampling rounds; then the rows run to the end
    weight_temperature: float = 1.0  # weights are score ** (1 / weight_temperature), score: Conventions.score
    resample: str = "multinomial"  # or "reject": only the weakest reject_fraction of rows are replaced
    reject_fraction: float = 0.25

    def __post_init__(self):
        check_field_types(self)
        checks = [(self.particles >= 1, f"particles={self.particles} must be >= 1 (a budget of 0 samples answers "
                   "nothing)"),
                  (len(self.step_delimiter) > 0, "step_delimiter must not be empty"),
                  (self.max_steps >= 0, f"max_steps={self.max_steps} must be >= 0"),
                  (self.weight_temperature > 0, f"weight_temperature={self.weight_temperature} must be > 0"),
                  (self.resample in RESAMPLERS, f"resample={self.resample!r}: use one of {RESAMPLERS}"),
                  (0 <= self.reject_fraction < 1, f"reject_fraction={self.reject_fraction} must be in [0, 1) (at "
                   "least one row survives to be copied)")]
        if self.resample == "reject" and self.particles > 1:
            checks.append((int(self.reject_fraction * self.particles) >= 1,
                           f"reject_fraction={self.reject_fraction} of particles={self.particles} rejects no row; "
                           f"raise it to >= 1/{self.particles} or use more particles"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"ParticleRule.{message}")


def weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    """``[P, N]`` resampling weights from verifier scores in [0, 1]: ``score ** (1 / temperature)`` normalised per
    problem, computed in log space (tiny scores at a low temperature keep their order instead of all underflowing to
    0 and a uniform draw); a NaN score weighs 0; uniform where every score is 0."""
    scores = np.clip(np.nan_to_num(np.asarray(scores, np.float64), nan=0.0), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_w = np.log(scores) / temperature
    top = log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w - np.where(np.isfinite(top), top, 0.0))
    total = w.sum(axis=1, keepdims=True)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / w.shape[1])


def resample(w: np.ndarray, rule: ParticleRule, rng: np.random.Generator) -> np.ndarray:
    """``[P, N]`` row indices within each problem (the row that moves into each position)."""
    p, n = w.shape
    if rule.resample == "multinomial":
        return np.stack([rng.choice(n, size=n, p=row) for row in w])
    index = np.tile(np.arange(n), (p, 1))
    drop = int(rule.reject_fraction * n)
    if drop:
        order = np.argsort(w, axis=1, kind="stable")  # ascending: the weakest first
        strongest_first = order[:, drop:][:, ::-1]  # the survivors; the dropped rows take copies of them in turn
        np.put_along_axis(index, order[:, :drop], strongest_first[:, np.arange(drop) % (n - drop)], axis=1)
    return index


@functools.lru_cache(maxsize=4)  # a sweep of rules decodes the vocabulary once, not once per rule
def delimiter_ids(tokenizer, delimiter: str) -> tuple[int, ...]:
    """Every token id whose text ends with ``delimiter`` (e.g. "\\n\\n" alone or after punctuation)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
    return tuple(i for i, t in enumerate(texts) if t.endswith(delimiter))


def check_delimiter(tokenizer, rule: ParticleRule) -> tuple[int, ...]:
    """The ids that end a step under ``rule`` (none when it takes no steps); one line when its delimiter ends no
    token of ``tokenizer``."""
    delimiters = delimiter_ids(tokenizer, rule.step_delimiter) if rule.max_steps else ()
    if rule.max_steps and not delimiters:
        raise ValueError(f"ParticleRule.step_delimiter={rule.step_delimiter!r} ends no token of this tokenizer; "
                         "choose the text that ends a solution step (e.g. '\\n\\n', or '\\n' for line-per-step)")
    return delimiters


def run(policy, records: list[dict], rule: ParticleRule, *, seed: int = 0) -> Outcome:
    """Particle filtering live on ``policy`` (a ``strategies.policy.Policy``) over ``records``."""
    delimiters = check_delimiter(policy.tokenizer, rule)
    decoder, state, n = policy.decoder, policy.state, rule.particles
    cap = decoder.max_new_tokens
    correct, tokens, passes, answers = [], [], [], []
    for b, (chunk, ids, mask, rng) in enumerate(policy.batches(records, seed)):
        generator = np.random.default_rng([seed, b])
        rows = decoder.start(state, ids, mask, rng, n)
        spent = np.ones(len(chunk) * n, np.int64)  # the first token of every row
        # verifier passes: a row that ended on its first token is scored once; one that went on, after each advance
        scored = (~np.asarray(rows.live)).astype(np.int64)
        for _ in range(rule.max_steps):
            live = np.asarray(rows.live)
            if not live.any():
                break
            searching = live.reshape(-1, n).any(axis=1)  # a problem whose rows have all finished is done
            before = np.asarray(rows.n)
            scored += live
            rows = decoder.advance(state, rows, rng, np.full(len(before), cap), delimiters)
            spent += np.asarray(rows.n) - before
            verdicts = np.asarray(decoder.score(state, rows))
            w = weights(policy.conventions.scores(verdicts[:, 0], verdicts[:, 1]).reshape(-1, n),
                        rule.weight_temperature)
            index = np.tile(np.arange(n), (len(chunk), 1))
            index[searching] = resample(w[searching], rule, generator)
            rows = decoder.take(rows, (index + np.arange(len(chunk))[:, None] * n).reshape(-1))
        before = np.asarray(rows.n)
        scored += np.asarray(rows.live)
        rows = decoder.advance(state, rows, rng, np.full(len(before), cap))
        spent += np.asarray(rows.n) - before
        read = policy.read(rows, chunk, decoder.score(state, rows))
        classes = policy.classes(read["answers"])
        for i in range(len(chunk)):
            grade, answer = voted(classes[i], read["scores"][i], read["correct"][i], read["answers"][i])
            correct.append(grade)
            answers.append(answer)
        tokens += list(spent.reshape(-1, n).sum(axis=1))
        passes += list(scored.reshape(-1, n).sum(axis=1))
    return Outcome(correct=np.asarray(correct), samples=np.full(len(records), n), tokens=np.asarray(tokens),
                   verifier_passes=np.asarray(passes), answers=tuple(answers))
