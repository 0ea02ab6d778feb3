"""Test-time strategies: how many samples, and how many tokens, each problem gets, decided by the model's own
verifier rather than fixed in advance.

- ``fixed``: N samples per problem, voted (``rlvjax.testtime``'s curves).
- ``adaptive`` (``adaptive.py``): samples in rounds until the verifier-weighted vote is settled.
- ``length`` (``length.py``): growing token budgets until the verifier is confident in the vote (sequential scaling).
- ``particle`` (``particle.py``): particle filtering over partial solutions scored on their live caches.

Each strategy is a frozen rule, checked without JAX; a live run on a policy (``run``); and, where the strategy only
re-reads i.i.d. samples (adaptive, length), a replay on an evaluated pool that gives the live run's result exactly
for those samples, paired with the fixed-N curves of the same pool. All return an ``Outcome`` (grades, samples,
generated tokens and verifier passes; ``report.py`` prices them against fixed-N voting). ``flags.py`` reads
``python -m rlvjax.evaluate``'s ``--strategy`` flags as rules.
"""

NAMES = ("fixed", "adaptive", "length", "particle")
