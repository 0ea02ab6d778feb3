"""The run's RL and optimiser settings (``RLConfig``, ``OptimConfig``): gin-bound, checked on construction with
one-line errors; ``rl/steps.py`` consumes them."""

from __future__ import annotations

import dataclasses

import optax

from rlvjax import sampling
from rlvjax.fieldtypes import check_field_types
from rlvjax.model.transformer import remat_policy
from rlvjax.rl import advantages as advantages_lib
from rlvjax.rl import losses


ALGORITHM_AGGREGATION = {"dr_grpo": "seq_mean_token_sum_norm"}  # RLConfig.aggregation = None: token_mean otherwise
ALGORITHM_TRUNCATED_REWARD = {"vineppo": 0.0}  # RLConfig.truncated_reward = None: graded on the text otherwise


@dataclasses.dataclass(frozen=True)
class RLConfig:
    # advantage estimator (rl/advantages.py): "grpo", "dr_grpo", "rloo" or "vineppo", or your own as
    # "module:function" (rlvjax.rl.advantages.register; step_values=True for a VinePPO-style step estimator)
    algorithm: str = "grpo"
    group_size: int = 8  # G: samples per prompt
    lambda_verify: float = 1.0  # weight of the verification loss L_V (0: plain RL, the paper's baseline)
    # Class-balanced L_V: Yes and No rows weigh half each in every optimizer step's minibatch, so that p(Yes) = 0.5
    # is the balanced-accuracy decision even when most rollouts are wrong (a plain L_V learns the base rate and then
    # rarely says Yes). metrics.jsonl logs both verifier_accuracy and verifier_balanced_accuracy (the bar's ver_acc
    # is the first); verify_loss and verify/* stay unweighted figures on the rollouts, verify_loss_trained the
    # balanced L_V trained on.
    verify_balance: bool = False
    beta: float = 0.0  # KL(pi || pi_ref) weight; > 0 keeps a frozen copy of the initial policy
    # Per-token estimate of KL(pi || pi_ref) in the loss: "k3" (Schulman's, TRL's), or "k1" (logp - ref), whose
    # gradient on on-policy samples is grad log pi and averages to 0: a penalty that mostly does nothing.
    kl_estimator: str = "k3"
    eps_low: float = 0.2  # PPO clip: ratio >= 1 - eps_low
    eps_high: float = 0.2  # PPO clip: ratio <= 1 + eps_high (DAPO's clip-higher when > eps_low)
    # How per-token losses become one number (rl/losses.py AGGREGATIONS). None: dr_grpo's own,
    # "seq_mean_token_sum_norm" (its paper's constant length normaliser); for the others "token_mean" (DAPO's
    # token-level mean; DeepSeekMath's GRPO formula averages each sequence first: "seq_mean_token_mean").
    aggregation: str | None = None
    advantage_eps: float = 1e-6  # grpo: added to the group's reward std
    temperature: float = 1.0  # sampling temperature of the rollouts
    top_p: float = 1.0  # nucleus sampling (1: off)
    top_k: int = 0  # top-k sampling (0: off)
    max_new_tokens: int = 64  # longest completion; longer ones are truncated (see truncated_reward)
    # The training reward of a rollout cut off at max_new_tokens, whatever its text says (its verifier label is then
    # 'No'), and in VinePPO's value pass of a continuation cut off alike. None: the algorithm's own (reward_if_cut):
    # vineppo 0, as VinePPO's MATH config scores them (penalize_unfinished_response); the others grade it on its
    # text like any other completion, as TRL does. Evaluation and the end-of-run report grade every completion on its
    # text either way.
    truncated_reward: float | None = None
    num_ppo_epochs: int = 1  # passes over each batch of rollouts
    num_minibatches: int = 1  # optimizer steps per epoch (the rollouts split evenly)
    micro_batch_size: int = 0  # rows per gradient-accumulation step; 0: the whole minibatch at once
    # Update-step (and warm-start) memory: "none", "full" (recompute each decoder layer in the backward pass,
    # keeping its input) or a jax.checkpoint policy name (model/transformer.py REMAT_POLICIES).
    remat: str = "none"
    # Positions whose [V] log-softmax is built at once in the update and the warm start (0: all; e.g. 128 keeps no
    # [rows, N, V] f32 buffer alive, at the cost of the head's gradient held whole over fsdp).
    logprob_chunk_size: int = 0
    # K continuations per step prefix (VinePPO's value estimate); a prefix several rollouts share (a problem's
    # prompt, steps they open with alike) is sampled once, as VinePPO deduplicates its value queries
    vineppo_samples: int = 9
    # VinePPO's max_step_for_value_estimation. None, as in VinePPO's MATH setup: no cap, every step prefix gets K
    # continuations (the step arrays are as wide as the batch's longest rollout). M: only the prompt and the first M
    # step prefixes do; later prefixes take the rollout's reward as their value, so step M + 1 gets reward - V(s_M)
    # and later steps advantage 0 (VinePPO's GSM8K configs: M = 25).
    vineppo_max_steps: int | None = None
    # vineppo: per-token advantages whitened over the rollout batch's completion tokens, as VinePPO's MATH config
    # does (whiten_advantages: true; VinePPO pools the statistics of each training micro-batch across GPUs, so the
    # two agree when num_minibatches = 1 without accumulation). The group estimators normalise within each group
    # instead and ignore it.
    whiten_advantages: bool = True
    # Opt-in: each rollout also trains the verifier on this many of its partial solutions, ``prompt + the first
    # c_j tokens + verify prompt`` with c_j = body * j / (m + 1) (j = 1..m), labelled with the whole rollout's label:
    # p(Yes) after a partial solution then estimates its chance of ending right, which verifier-guided search scores
    # (rlvjax.strategies.particle). These rows carry no policy loss; the update holds (1 + m) x the rows, and L_V
    # averages over all of them (a complete solution's row weighs lambda / (1 + m) of the loss). 0: complete
    # solutions only, as in the paper. With lambda_verify = 0 (a lambda = 0 baseline or sweep point) no such rows are
    # built: they would carry no loss at all. verify_loss and verify/* in metrics.jsonl read the complete solutions
    # (as a lambda = 0 baseline's do), verify_loss_trained the L_V over all the rows.
    verify_prefixes: int = 0

    def __post_init__(self):
        check_field_types(self)
        step_values = advantages_lib.uses_step_values(self.algorithm)  # unknown names fail here, listing the valid ones
        try:
            remat_policy(self.remat)
        except ValueError as e:
            raise ValueError(f"RLConfig.remat: {e}") from None
        for name, value, valid in (("aggregation", self.loss_aggregation, losses.AGGREGATIONS),
                                   ("kl_estimator", self.kl_estimator, losses.KL_ESTIMATORS)):
            if value not in valid:
                raise ValueError(f"RLConfig.{name}={value!r} is unknown; valid names: {sorted(valid)}")
        checks = [
            (self.lambda_verify >= 0, f"lambda_verify={self.lambda_verify} must be >= 0 (0 disables verification)"),
            (self.beta >= 0, f"beta={self.beta} must be >= 0"),
            (0 < self.eps_low < 1 and self.eps_high > 0, f"eps_low={self.eps_low} must be in (0, 1) (the ratio's "
             f"lower clip is 1 - eps_low) and eps_high={self.eps_high} > 0"),
            (self.advantage_eps > 0, f"advantage_eps={self.advantage_eps} must be > 0"),
            (self.temperature >= sampling.MIN_TEMPERATURE, f"temperature={self.temperature} must be >= "
             f"{sampling.MIN_TEMPERATURE} for RL (greedy has no ratio)"),
            (0 < self.top_p <= 1, f"top_p={self.top_p} must be in (0, 1] (1 disables nucleus sampling)"),
            (self.top_k >= 0, f"top_k={self.top_k} must be >= 0 (0 disables top-k)"),
            (self.group_size >= 2 or (step_values and self.group_size >= 1),
             f"group_size={self.group_size}: {self.algorithm} compares samples of one problem, use >= 2"
             if not step_values else f"group_size={self.group_size} must be >= 1"),
            (self.max_new_tokens >= 1, f"max_new_tokens={self.max_new_tokens} must be >= 1"),
            (self.num_ppo_epochs >= 1 and self.num_minibatches >= 1,
             f"num_ppo_epochs={self.num_ppo_epochs}, num_minibatches={self.num_minibatches} must be >= 1"),
            (self.micro_batch_size >= 0, f"micro_batch_size={self.micro_batch_size} must be >= 0 (0: no accumulation)"),
            (self.logprob_chunk_size >= 0,
             f"logprob_chunk_size={self.logprob_chunk_size} must be >= 0 (0: every completion position at once)"),
            (self.vineppo_samples >= 1, f"vineppo_samples={self.vineppo_samples} must be >= 1"),
            (self.verify_prefixes >= 0, f"verify_prefixes={self.verify_prefixes} must be >= 0 (0: complete "
             "solutions only)"),
            (self.vineppo_max_steps is None or self.vineppo_max_steps >= 1,
             f"vineppo_max_steps={self.vineppo_max_steps!r} must be None (no cap) or an int >= 1"),
        ]
        _raise_first(checks, "RLConfig")

    @property
    def reward_if_cut(self) -> float | None:
        """``truncated_reward``, or the algorithm's own when None (resolved on use, as ``loss_aggregation``): 0 for
        vineppo, None (graded on its text) for the others."""
        if self.truncated_reward is not None:
            return self.truncated_reward
        return ALGORITHM_TRUNCATED_REWARD.get(self.algorithm)

    @property
    def loss_aggregation(self) -> str:
        """``aggregation``, or the algorithm's own when None (resolved on use, so that replacing the algorithm
        alone changes it too)."""
        if self.aggregation is not None:
            return self.aggregation
        return ALGORITHM_AGGREGATION.get(self.algorithm, "token_mean")

    @property
    def trained_prefixes(self) -> int:
        """Partial solutions of each rollout the update trains the verifier on: ``verify_prefixes``, none at
        lambda_verify = 0, where their rows would carry no loss."""
        return self.verify_prefixes if self.lambda_verify > 0 else 0

    @property
    def update_rows_per_rollout(self) -> int:
        """Training rows one rollout becomes: itself and its ``trained_prefixes`` partial solutions."""
        return 1 + self.trained_prefixes

    @property
    def updates_per_step(self) -> int:
        """Optimizer updates one RL step makes: ``num_ppo_epochs`` passes over ``num_minibatches`` minibatches."""
        return self.num_ppo_epochs * self.num_minibatches

    @property
    def sampling_params(self) -> sampling.SamplingParams:
        return sampling.SamplingParams(self.temperature, self.top_p, self.top_k)


COSINE_FLOOR = 0.1  # the cosine schedule decays to this fraction of the peak rate


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 1e-6  # AdamW peak learning rate
    warmup_steps: int = 0  # linear warm-up from 0 over this many optimizer steps
    schedule: str = "constant"  # or "cosine" (decays to 10% over the run)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    b1: float = 0.9  # AdamW first-moment decay
    b2: float = 0.999  # AdamW second-moment decay
    max_grad_norm: float = 1.0  # gradients clipped to this global norm
    max_consecutive_nonfinite: int = 5  # updates with NaN/inf gradients are skipped, this many in a row stop the run

    def __post_init__(self):
        check_field_types(self)
        _raise_first([
            (self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0"),
            (self.warmup_steps >= 0, f"warmup_steps={self.warmup_steps} must be >= 0"),
            (self.schedule in ("constant", "cosine"), f"schedule={self.schedule!r} is unknown; use 'constant' or 'cosine'"),
            (self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0"),
            (0 <= self.b1 < 1 and 0 <= self.b2 < 1, f"b1={self.b1}, b2={self.b2} must be in [0, 1)"),
            (self.max_grad_norm > 0, f"max_grad_norm={self.max_grad_norm} must be > 0"),
            (self.max_consecutive_nonfinite >= 1,
             f"max_consecutive_nonfinite={self.max_consecutive_nonfinite} must be >= 1 (non-finite updates in a row "
             "that stop the run)"),
        ], "OptimConfig")

    @property
    def lowest_rate(self) -> float:
        """The lowest learning rate the schedule reaches after its warm-up."""
        return self.learning_rate * (COSINE_FLOOR if self.schedule == "cosine" else 1.0)

    def learning_rates(self, total_steps: int) -> optax.ScalarOrSchedule:
        """The learning rate (a constant, or an optax schedule of the optimizer step) over ``total_steps``
        optimizer steps."""
        if self.schedule == "constant":  # linear warm-up, then flat
            return optax.linear_schedule(0.0, self.learning_rate, self.warmup_steps) if self.warmup_steps \
                else self.learning_rate
        if self.schedule == "cosine" and not self.warmup_steps:  # from the first update (optax's warm-up
            return optax.cosine_decay_schedule(self.learning_rate, max(total_steps, 1), alpha=COSINE_FLOOR)  # starts
            # at 0)
        if self.schedule == "cosine":
            return optax.warmup_cosine_decay_schedule(0.0, self.learning_rate, self.warmup_steps,
                                                      max(total_steps, self.warmup_steps + 1),
                                                      self.learning_rate * COSINE_FLOOR)
        raise ValueError(f"unknown schedule {self.schedule!r}; use 'constant' or 'cosine'")  # __post_init__ checked

    def make(self, total_steps: int) -> optax.GradientTransformation:
        lr = self.learning_rates(total_steps)
        tx = optax.chain(optax.clip_by_global_norm(self.max_grad_norm),
                         optax.adamw(lr, self.b1, self.b2, weight_decay=self.weight_decay))
        return optax.apply_if_finite(tx, self.max_consecutive_nonfinite)


def _raise_first(checks: list[tuple[bool, str]], owner: str) -> None:
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{owner}.{message}")
