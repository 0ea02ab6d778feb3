"""RL^V algorithm pieces as pure functions: advantage estimators, losses, verifier prompt/labels/scores."""

from rlvjax.rl import advantages, losses, verifier

__all__ = ["advantages", "losses", "verifier"]
