"""The training input pipeline: seeded per-epoch shuffle, per-process shard, batch, repeat — resumable exactly.

Built on grain's ``MapDataset`` because its elements are addressed by index: the whole iterator state is one
integer (the next batch index), so saving it with the checkpoint and setting it after a restart reproduces the data
order to the batch, on every host, without replaying the stream.

Order of operations, and why:
  shuffle (global, reseeded every epoch) -> trim to a multiple of the global batch (``batch_size * shard_count``)
  -> cut into ``batch_size`` slices -> take every ``shard_count``-th slice from ``shard_index`` -> repeat.
So global batch ``k`` is the same records in the same order however many processes share it: process ``p`` holds
its rows ``[p * batch_size, (p + 1) * batch_size)``, and gathering the processes' batches in process order
rebuilds it. A run on 2 hosts therefore samples, grades and updates exactly what the same run on 1 host does.
grain shuffles epoch ``e`` with ``shuffle_seed + e``; the shuffle seed is a hash of the run seed, so runs with
seeds 0, 1, 2 see unrelated orders rather than one order shifted by an epoch.
Shuffling before sharding gives every process a fresh random slice each epoch while the slices stay disjoint and
cover the epoch (less the trimmed remainder). Trimming keeps all shards the same length, so every process takes
the same number of steps and no host waits at a collective for a batch that never comes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, Sequence

import grain

STATE_KEYS = ("seed", "batch_size", "shard_count", "num_records", "records_sha256")
# How the run seed becomes grain's shuffle seed. States saved before this key existed used the seed itself
# ("plain"), so a run resumed from one keeps the order it started with.
SHUFFLE_SCHEMES = ("sha256", "plain")


class DataIterator:
    """Yields batches (a ``list`` of ``batch_size`` fresh record dicts) and saves/restores its position as a dict
    of plain ints (JSON-serialisable, stored with the checkpoint).

    The state is the same on every process (it holds no ``shard_index``), so one copy written by the primary host is
    a valid resume point for all of them, and for a job with another process count but the same global batch.
    """

    def __init__(self, records: Sequence[dict], *, batch_size: int, seed: int, shard_index: int, shard_count: int,
                 num_epochs: int | None):
        _check_arguments(len(records), batch_size, seed, shard_index, shard_count, num_epochs)
        self.batches_per_epoch = len(records) // (shard_count * batch_size)
        self._pipeline = {"seed": seed, "batch_size": batch_size, "shard_count": shard_count,
                          "num_records": len(records), "records_sha256": fingerprint(records)}
        self._records = records
        self._batches = functools.partial(sharded_batches, records, batch_size=batch_size, seed=seed,
                                          shard_index=shard_index, shard_count=shard_count)
        self._num_epochs = num_epochs
        self._start(SHUFFLE_SCHEMES[0])

    def _start(self, scheme: str) -> None:
        self._shuffle = scheme
        # Records are small dicts and batching is list-building: reader threads would only cost their start-up.
        options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        self._iterator = iter(self._batches(shuffle=scheme).repeat(self._num_epochs).to_iter_dataset(options))

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> list[dict]:
        return next(self._iterator)

    def get_state(self) -> dict[str, Any]:
        """Position plus the pipeline settings it is only meaningful for; JSON-serialisable."""
        return {"next_index": int(self._iterator.get_state()["next_index"]), **self._pipeline,
                "shuffle": self._shuffle}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a saved position; refuses one saved for other records (another count or content), seed
        or global batch size.

        The process count may change (e.g. a 2-host job resumed on 1 host): global batch ``k`` holds the same records
        however many processes split it, and ``next_index`` counts global batches.
        """
        saved = {k: state.get(k) for k in STATE_KEYS}
        if saved["records_sha256"] is None or (saved["records_sha256"] != self._pipeline["records_sha256"]
                                               and saved["records_sha256"] == _sha256_16(list(self._records))):
            # saved before the content was recorded, or (before 2026-12-07) with the records' ids hashed too
            saved["records_sha256"] = self._pipeline["records_sha256"]
        if not _same_global_order(saved, self._pipeline):
            differing = ", ".join(f"{k} (saved {saved[k]}, now {self._pipeline[k]})" for k in STATE_KEYS
                                  if saved[k] != self._pipeline[k])
            raise ValueError(f"data state was saved for a different pipeline: {differing}; resume with the same "
                             "data, seed and global batch size (batch size x process count), or start a fresh "
                             "workdir")
        scheme = state.get("shuffle", "plain")
        if scheme not in SHUFFLE_SCHEMES:
            raise ValueError(f"data state has shuffle={scheme!r}, which this rlvjax does not know (it knows "
                             f"{', '.join(SHUFFLE_SCHEMES)}); resume with the rlvjax that saved it")
        if scheme != self._shuffle:
            self._start(scheme)
        self._iterator.set_state({"next_index": int(state["next_index"])})


def make_iterator(records: Sequence[dict], *, batch_size: int, seed: int, shard_index: int = 0,
                  shard_count: int = 1, num_epochs: int | None = None) -> DataIterator:
    """The per-process batch iterator over ``records``; infinite unless ``num_epochs`` is set.

    ``batch_size`` is per process (the global batch is ``batch_size * shard_count``); pass
    ``shard_index=jax.process_index(), shard_count=jax.process_count()`` on multi-host runs.
    """
    return DataIterator(records, batch_size=batch_size, seed=seed, shard_index=shard_index,
                        shard_count=shard_count, num_epochs=num_epochs)


def sharded_batches(records: Sequence[dict], *, batch_size: int, seed: int, shard_index: int,
                    shard_count: int, shuffle: str = SHUFFLE_SCHEMES[0]) -> grain.MapDataset:
    """One epoch of this process's batches; indexing past the end continues into reshuffled later epochs."""
    dataset = grain.MapDataset.source(records).shuffle(seed=shuffle_seed(seed, shuffle))
    dataset = dataset[: len(records) - len(records) % (batch_size * shard_count)]
    return dataset.batch(batch_size, batch_fn=copy_records)[shard_index::shard_count]


def shuffle_seed(seed: int, scheme: str) -> int:
    """grain's shuffle seed for a run seed: 32 bits of a SHA-256 of it, or (``"plain"``, older states) the seed.

    grain reshuffles epoch ``e`` with ``shuffle_seed + e``; with the seed itself, seed 1's epochs would be seed 0's
    from its second epoch on.
    """
    if scheme == "plain":
        return seed
    return int.from_bytes(hashlib.sha256(f"rlvjax data order {seed}".encode()).digest()[:4], "big")


def _same_global_order(saved: dict, current: dict) -> bool:
    if None in saved.values():
        return False
    return (saved["seed"] == current["seed"] and saved["num_records"] == current["num_records"]
            and saved["records_sha256"] == current["records_sha256"]
            and saved["batch_size"] * saved["shard_count"] == current["batch_size"] * current["shard_count"])


def fingerprint(records: Sequence[dict]) -> str:
    """The first 16 hex digits of the SHA-256 of ``records`` as JSON, their ids aside: what a resume checks the data
    against. A row without an id is named for its file ("train-3"): a renamed file is the same data (its resume
    was refused as "a different pipeline")."""
    return _sha256_16([{k: v for k, v in record.items() if k != "id"} for record in records])


def _sha256_16(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def copy_records(records: Sequence[dict]) -> list[dict]:
    """A batch owns its dicts: a caller adding fields to a batch must not edit the source records of later epochs."""
    return [dict(record) for record in records]


def _check_arguments(num_records: int, batch_size: int, seed: int, shard_index: int, shard_count: int,
                     num_epochs: int | None) -> None:
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index}, shard_count={shard_count}; need 0 <= shard_index < shard_count")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; need at least 1 record per batch")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed}; need 0 <= seed < 2**32 (grain's shuffle is 32-bit)")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs={num_epochs}; need a positive count or None to repeat forever")
    if num_records // shard_count < batch_size:
        raise ValueError(
            f"{num_records} records over {shard_count} processes cannot fill one batch of {batch_size} per process; "
            "lower batch_size or add data"
        )
