"""The sampling engine against transformers.generate, against teacher-forced log-probs of our own model, and
against itself: refill, shrinking, chunked attention and token caps never change a sample."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import rlvjax
from rlvjax import sampling
from rlvjax.model import transformer
from conftest import xla_flags
import forkserver

PROMPTS = [[5, 9, 17, 3, 44, 12, 8], [30, 31], [7, 7, 60, 61, 62, 63, 64, 65, 66, 67, 68]]


@pytest.fixture(scope="module")
def qwen(hf_checkpoint):
    path, ref = hf_checkpoint("qwen2")
    model, _ = rlvjax.load_hf(path, tokenizer=False)
    return model, ref


def teacher_forced(model, prompt, completion, temperature):
    """log p(completion_t | prefix) from one full forward pass at the sampling temperature."""
    seq = jnp.asarray([list(prompt) + list(completion)])
    logits = np.asarray(model(seq))[0].astype(np.float64)
    if temperature:
        logits = logits / temperature
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    idx = np.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return logp[idx, completion]


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])  # Qwen3: query/key norms before the cache
def test_greedy_matches_transformers_generate(qwen, hf_checkpoint, kind):
    model, ref = qwen if kind == "qwen2" else (rlvjax.load_hf(hf_checkpoint(kind)[0], tokenizer=False)[0],
                                               hf_checkpoint(kind)[1])
    out = sampling.sample(model, PROMPTS, max_new_tokens=32, temperature=0.0)
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
    with torch.no_grad():
        hf = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=32, do_sample=False,
                        eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(np.asarray(out.tokens[:, 0]), hf[:, width:].numpy())
    assert np.all(np.asarray(out.lengths) == 32) and not np.any(np.asarray(out.finished))


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 20, 1.0), (1.3, 0, 0.9), (0.0, 0, 1.0)])
def test_logprobs_equal_teacher_forced(qwen, temperature, top_k, top_p):
    model, _ = qwen
    out = sampling.sample(model, PROMPTS, num_samples=3, max_new_tokens=24, temperature=temperature, top_k=top_k,
                        top_p=top_p, seed=3, stop_ids=[2, 11])
    tokens, lengths, logprobs = map(np.asarray, (out.tokens, out.lengths, out.logprobs))
    for b, prompt in enumerate(PROMPTS):
        for g in range(3):
            n = lengths[b, g]
            expected = teacher_forced(model, prompt, tokens[b, g, :n], temperature)
            np.testing.assert_allclose(logprobs[b, g, :n], expected, atol=1e-4)
            assert np.all(logprobs[b, g, n:] == 0)


def test_suppressed_ids_are_never_sampled_and_logprobs_renormalise(qwen):
    model, _ = qwen
    # The ids greedy decoding picks first, so suppressing them changes what is sampled.
    greedy = np.asarray(sampling.sample(model, PROMPTS, max_new_tokens=8, temperature=0.0).tokens)
    banned = sorted({int(t) for t in greedy.ravel()})[:6]
    out = sampling.sample(model, PROMPTS, num_samples=8, max_new_tokens=16, temperature=2.0, seed=1,
                        suppress_ids=banned)
    tokens, lengths, logprobs = map(np.asarray, (out.tokens, out.lengths, out.logprobs))
    assert not np.isin(tokens, banned).any()
    assert not np.isin(np.asarray(sampling.sample(model, PROMPTS, max_new_tokens=8, temperature=0.0,
                                                suppress_ids=banned).tokens), banned).any()
    for b, prompt in enumerate(PROMPTS):
        seq = jnp.asarray([list(prompt) + list(tokens[b, 0])])
        logits = np.asarray(model(seq))[0].astype(np.float64) / 2.0
        logits[:, banned] = -np.inf  # the distribution renormalised over the allowed ids
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        idx = np.arange(len(prompt) - 1, len(prompt) + lengths[b, 0] - 1)
        np.testing.assert_allclose(logprobs[b, 0, :lengths[b, 0]], logp[idx, tokens[b, 0, :lengths[b, 0]]],
                                 atol=1e-4)


def test_stop_ids_end_rows_and_pad_after(qwen):
    model, _ = qwen
    # A stop set of many frequent ids guarantees early stops under sampling.
    stops = list(range(3, 60))
    out = sampling.sample(model, PROMPTS, num_samples=4, max_new_tokens=16, seed=1, stop_ids=stops, pad_id=0)
    tokens, lengths, finished = map(np.asarray, (out.tokens, out.lengths, out.finished))
    assert finished.any()
    for b in range(len(PROMPTS)):
        for g in range(4):
            n = lengths[b, g]
            row = tokens[b, g]
            assert not np.isin(row[: n - 1], stops).any()
            assert finished[b, g] == (row[n - 1] in stops)
            assert finished[b, g] or n == 16
            assert np.all(row[n:] == 0)


def test_deterministic_and_independent_of_padding(qwen):
    model, _ = qwen
    kw = dict(num_samples=2, max_new_tokens=12, temperature=1.0, seed=7)
    a = sampling.sample(model, PROMPTS, **kw)
    b = sampling.sample(model, PROMPTS, bucket=64, **kw)
    c = sampling.sample(model, PROMPTS, **{**kw, "seed": 8})
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_allclose(np.asarray(a.logprobs), np.asarray(b.logprobs), atol=1e-5)
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
    assert not np.array_equal(np.asarray(a.tokens[:, 0]), np.asarray(a.tokens[:, 1]))  # the G samples differ


def test_right_padded_array_equals_ragged_lists(qwen):
    model, _ = qwen
    width = max(map(len, PROMPTS))
    ids = np.array([p + [0] * (width - len(p)) for p in PROMPTS])
    mask = np.array([[1] * len(p) + [0] * (width - len(p)) for p in PROMPTS])
    a = sampling.sample(model, PROMPTS, max_new_tokens=8, seed=2)
    b = sampling.sample(model, ids, prompt_mask=mask, max_new_tokens=8, seed=2)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))


def test_top_k_one_and_tiny_top_p_are_greedy(qwen):
    model, _ = qwen
    greedy = np.asarray(sampling.sample(model, PROMPTS, max_new_tokens=10, temperature=0).tokens)
    for kw in (dict(top_k=1), dict(top_p=1e-6)):
        out = sampling.sample(model, PROMPTS, max_new_tokens=10, temperature=1.0, seed=5, **kw)
        np.testing.assert_array_equal(np.asarray(out.tokens), greedy)


@pytest.mark.slow
def test_fused_score_equals_full_forward(qwen):
    model, _ = qwen
    suffix, targets = [2, 70, 71, 72], [4, 5]
    stops = list(range(3, 15))
    out = sampling.sample(model, PROMPTS, num_samples=3, max_new_tokens=10, seed=4, stop_ids=stops,
                        score_suffix=suffix, score_ids=targets)
    tokens, lengths, finished = map(np.asarray, (out.tokens, out.lengths, out.finished))
    scores = np.asarray(out.score_logprobs)
    assert scores.shape == (3, 3, 2) and finished.any() and not finished.all()
    for b, prompt in enumerate(PROMPTS):
        for g in range(3):
            completion = list(tokens[b, g, : lengths[b, g] - int(finished[b, g])])  # the stop token is not scored
            logits = model(jnp.asarray([prompt + completion + suffix]))[0, -1]
            expected = np.asarray(jax.nn.log_softmax(logits))[targets]
            np.testing.assert_allclose(scores[b, g], expected, atol=1e-4)


def test_one_compilation_per_bucket(qwen):
    model, _ = qwen
    kw = dict(max_new_tokens=6, temperature=0.5, top_k=3)
    sampling.sample(model, [[1, 2, 3]], **kw)
    before = sampling.engine._generate_jit._cache_size()
    sampling.sample(model, [[9, 8, 7, 6, 5]], seed=1, **kw)  # same bucket, new seed: no retrace
    assert sampling.engine._generate_jit._cache_size() == before


def test_bad_arguments_raise_clear_errors(qwen):
    model, _ = qwen
    with pytest.raises(ValueError, match="empty prompt"):
        sampling.sample(model, [[1], []], max_new_tokens=4)
    with pytest.raises(ValueError, match="top_p"):
        sampling.sample(model, [[1]], max_new_tokens=4, top_p=0.0)
    with pytest.raises(ValueError, match="score_suffix and score_ids"):
        sampling.sample(model, [[1]], max_new_tokens=4, score_suffix=[3])
    with pytest.raises(ValueError, match=r"^token 2 is in stop_ids and in suppress_ids: a suppressed token is never "
                                         r"sampled, so no completion would end at it"):  # every row ran to the cap
        sampling.sample(model, [[1]], max_new_tokens=4, stop_ids=[5, 2], suppress_ids=[0, 2])
    vocab = model.config.vocab_size  # an id past it would embed as NaN and sample garbage without a word
    with pytest.raises(ValueError, match=rf"^prompt holds token id {vocab}, outside the model's vocabulary "
                                         rf"\[0, {vocab}\); use ids from the model's own tokenizer$"):
        sampling.sample(model, [[1, vocab]], max_new_tokens=4)
    with pytest.raises(ValueError, match=r"^score_ids holds token id -1, outside"):
        sampling.sample(model, [[1]], max_new_tokens=4, score_suffix=[3], score_ids=[4, -1])
    with pytest.raises(ValueError, match=r"^stop_ids holds token id"):
        sampling.sample(model, [[1]], max_new_tokens=4, stop_ids=[vocab + 5])
    with pytest.raises(ValueError, match=r"^prompt_mask has shape \(1, 3\), the prompt ids \(3, 3\)"):
        sampling.sample(model, np.ones((3, 3), np.int32), prompt_mask=np.ones((1, 3)), max_new_tokens=4)
    with pytest.raises(ValueError, match=r"^temperature=nan must be a finite number >= 0"):
        sampling.sample(model, [[1]], max_new_tokens=4, temperature=float("nan"))
    # one prompt passed flat (a TypeError), float ids (silently truncated to other tokens)
    for prompts in ([5, 9, 17], [[5, 9.5, 17]]):
        with pytest.raises(ValueError, match=r"^prompts must be lists of integer token ids, one list per prompt: "
                                             r"\[\[\.\.\.\]\] for a single prompt$"):
            sampling.sample(model, prompts, max_new_tokens=4)
    with pytest.raises(ValueError, match=r"^prompt ids must be integers of shape \[batch, length\], got float64"):
        sampling.sample(model, np.array([[5.0, 9.5]]), max_new_tokens=4)
    # jax.random.key keeps 32 bits: seed 2**40 drew seed 0's samples
    with pytest.raises(ValueError, match=r"^seed=1099511627776 must be in \[0, 2\*\*32\)$"):
        sampling.sample(model, [[1]], max_new_tokens=4, seed=2**40)
    for name, value, said in (("max_new_tokens", 3.0, "3.0"), ("top_k", 2.5, "2.5"), ("seed", None, "None")):
        with pytest.raises(ValueError, match=rf"^{name}={said} must be an int$"):  # an XLA error, or truncated
            sampling.sample(model, [[1]], **{"max_new_tokens": 4, name: value})
    for stop_ids in ([None], None):  # tokenizer.eos_token_id of none, in a list or as it is (a TypeError)
        with pytest.raises(ValueError, match=r"^stop_ids\[0\]=None must be an int \(a tokenizer without that special"):
            sampling.sample(model, [[1]], max_new_tokens=4, stop_ids=stop_ids)
    with pytest.raises(ValueError, match=r"^bucket=0 must be an int >= 1 \(or None: bucketed widths\)$"):
        sampling.sample(model, [[1]], max_new_tokens=4, bucket=0)  # a ZeroDivisionError
    one = sampling.sample(model, [[1]], max_new_tokens=4, stop_ids=2, seed=3)  # tokenizer.eos_token_id as it is
    assert one.tokens.shape == sampling.sample(model, [[1]], max_new_tokens=4, stop_ids=[2], seed=3).tokens.shape


def test_prefill_in_chunks_equals_one_prefill(qwen):
    """Prompts prefilled a few at a time (rows j, j + B/rows, ...) give the samples of one whole-batch prefill."""
    model, _ = qwen
    ids, mask = sampling.left_pad(PROMPTS * 2)
    params = sampling.SamplingParams(temperature=1.0, stop_ids=(2,))
    run = lambda rows: jax.jit(lambda i, m: sampling.generate(
        model, i, m, jax.random.key(3), num_samples=2, max_new_tokens=8, params=params, score_suffix=(70, 71),
        score_ids=(4, 5), prefill_rows=rows))(ids, mask)
    whole, chunked = run(None), run(2)
    np.testing.assert_array_equal(np.asarray(whole.tokens), np.asarray(chunked.tokens))
    for field in ("logprobs", "score_logprobs"):
        np.testing.assert_allclose(np.asarray(getattr(whole, field)), np.asarray(getattr(chunked, field)), atol=1e-5)
    with pytest.raises(ValueError, match="prefill_rows=4 does not divide the 6 prompts"):
        run(4)


def _same(a, b):
    for field in ("tokens", "lengths", "finished"):
        np.testing.assert_array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)), err_msg=field)
    for field in ("logprobs", "score_logprobs"):
        np.testing.assert_allclose(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)), atol=1e-5,
                                   err_msg=field)


RAGGED = dict(num_samples=6, max_new_tokens=14, temperature=1.0, seed=11, stop_ids=list(range(3, 40)),
              score_suffix=[2, 70, 71], score_ids=[4, 5])


def test_refill_and_shrinking_leave_every_sample_unchanged(qwen, monkeypatch):
    """24 requests of ragged length: all in one batch (which halves to 12 rows once 12 have finished), 5 rows with
    continuous refill, the fewest rows (``rows=1`` runs ``MIN_BATCH`` = 2: requests two at a time, each with its
    own key), and one batch that never shrinks all give the same tokens, log-probs and fused scores."""
    model, _ = qwen
    prompts = PROMPTS + [[40, 41, 42, 43]]
    whole = sampling.sample(model, prompts, **RAGGED)
    lengths = np.asarray(whole.lengths)
    assert np.asarray(whole.finished).any() and len(set(lengths.ravel())) > 4  # ragged, so refill happens
    for rows in (5, 1):
        _same(sampling.sample(model, prompts, rows=rows, **RAGGED), whole)
    monkeypatch.setattr(sampling.engine, "MIN_ROWS", 10 ** 6)
    _same(sampling.sample(model, prompts, **{**RAGGED, "seed": 11, "bucket": 32}), whole)


def test_cache_blocks_leave_samples_unchanged(qwen, monkeypatch):
    """Caches stored in blocks of 6 slots (the 16-slot prompts in three, the last of 4; rows of 16 + 14 + 3 = 33
    slots in six, refilled and shrunk block by block) sample what one-block caches sample."""
    model, _ = qwen
    generate = sampling.engine._generate_jit  # KV_BLOCK is read when tracing; it is not part of the jit cache's key
    generate.clear_cache()
    try:
        monkeypatch.setattr(transformer, "KV_BLOCK", 10 ** 6)
        whole = sampling.sample(model, PROMPTS, rows=4, **RAGGED)
        monkeypatch.setattr(transformer, "KV_BLOCK", 6)
        monkeypatch.setattr(transformer, "KV_MAX_BLOCKS", 100)
        generate.clear_cache()  # else the second call reran the one-block program, and this compared it with itself
        blocked = sampling.sample(model, PROMPTS, rows=4, **RAGGED)
        assert generate._cache_size() == 1  # traced again, with blocks
        _same(blocked, whole)
    finally:
        generate.clear_cache()  # no other test may run the block program


@pytest.mark.parametrize("prompts, rows", [(PROMPTS[:1], None), (PROMPTS, 1)])
def test_one_request_or_one_row_decodes_its_cache_in_place(qwen, prompts, rows):
    """A batch of one row had XLA drop its unit batch dimension for the attention and write each cache block twice,
    on two copies of it, every decode step; the engine never runs fewer than two rows now."""
    from flax import nnx

    from rlvjax import hlo

    model, _ = qwen
    graphdef, state = nnx.split(model)
    ids, mask = sampling.left_pad(prompts)
    params = sampling.SamplingParams(temperature=1.0, stop_ids=(3,))
    run = jax.jit(lambda st: sampling.generate(nnx.merge(graphdef, st), ids, mask, jax.random.key(0), num_samples=1,
                                               max_new_tokens=40, params=params, rows=rows,
                                               score_suffix=(2, 70), score_ids=(4, 5)))
    cfg = model.config
    row_block = cfg.num_kv_heads * sampling.cache_slots(ids.shape[1], 40, 2) * cfg.kv_dim
    assert hlo.loop_copies(run.lower(state).compile().as_text(), row_block) == []


def test_limits_cap_each_sample(qwen):
    """Per-sample token caps end each request at its own length (not finished), and what was sampled before the cap
    is what the uncapped run sampled."""
    model, _ = qwen
    kw = dict(num_samples=2, max_new_tokens=12, temperature=1.0, seed=3)
    free = sampling.sample(model, PROMPTS, **kw)
    caps = np.array([[1, 12], [5, 3], [7, 2]])
    capped = sampling.sample(model, PROMPTS, limits=caps, **kw)
    lengths = np.asarray(capped.lengths)
    np.testing.assert_array_equal(lengths, caps)
    assert not np.asarray(capped.finished).any()
    for b in range(3):
        for g in range(2):
            n = caps[b, g]
            np.testing.assert_array_equal(np.asarray(capped.tokens)[b, g, :n], np.asarray(free.tokens)[b, g, :n])
            assert np.all(np.asarray(capped.tokens)[b, g, n:] == 0)
    with pytest.raises(ValueError, match=r"one token cap >= 1 per sample \(6\), got 2 with minimum 3$"):
        sampling.sample(model, PROMPTS, limits=[3, 4], **kw)
    with pytest.raises(ValueError, match=r"one token cap >= 1 per sample \(6\), got 0$"):
        sampling.sample(model, PROMPTS, limits=[], **kw)
    with pytest.raises(ValueError, match="rows=0"):
        sampling.sample(model, PROMPTS, rows=0, **kw)
    with pytest.raises(ValueError, match=r"^limits must be whole token counts, got float64 values$"):
        sampling.sample(model, PROMPTS, limits=[1.9, 2.2, 3, 3, 3, 3], **kw)  # cut to 1 and 2


SHARDED_SCRIPT = """
import json, sys
import jax, numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from rlvjax import parallel, sampling
from rlvjax.model import transformer
from rlvjax.model.transformer import ModelConfig, Transformer

transformer.KV_BLOCK = 12  # rows of 16 + 14 + 3 slots in blocks of 12, 12 and 9: refilled, shrunk, scored per block
cfg = ModelConfig(vocab_size=96, hidden_size=64, intermediate_size=112, num_layers=2, num_heads=8,
                  num_kv_heads=int(sys.argv[1]), qkv_bias=True)
model = Transformer(cfg, nnx.Rngs(0))
prompts = [[5, 9, 17, 3, 44, 12, 8], [30, 31], [7, 7, 60, 61, 62, 63, 64, 65, 66, 67, 68], [40, 41, 42, 43]]
ids, mask = sampling.left_pad(prompts)
kw = dict(num_samples=6, max_new_tokens=14, score_suffix=(2, 70, 71), score_ids=(4, 5),
          params=sampling.SamplingParams(temperature=1.0, stop_ids=tuple(range(3, 40))))
out = {}
for name, sizes, rows, prefill_rows in json.loads(sys.argv[2]):
    mesh = parallel.make_mesh(parallel.MeshConfig(*sizes), jax.devices()[:int(np.prod(sizes))])
    cache = parallel.cache_sharding(mesh, 24, cfg.num_kv_heads)
    state = nnx.state(model)
    state = jax.device_put(state, parallel.sampling_shardings(state, mesh, cache))
    graphdef = nnx.graphdef(model)
    run = jax.jit(lambda st, i, m: sampling.generate(nnx.merge(graphdef, st), i, m, jax.random.key(11), rows=rows,
                                                     cache_sharding=cache, prefill_rows=prefill_rows, **kw))
    o = run(state, ids, mask)
    out[name] = dict(spec=[str(a) for a in cache.spec], tokens=np.asarray(o.tokens).tolist(),
                     lengths=np.asarray(o.lengths).tolist(), logprobs=np.asarray(o.logprobs).tolist(),
                     scores=np.asarray(o.score_logprobs).tolist())
print("RESULT" + json.dumps(out))
"""


SPECS = {"data": ["('data', 'fsdp')"], "data_fsdp": ["('data', 'fsdp')"],
         "heads_tensor": ["('data', 'fsdp')", "tensor"], "rows_everywhere": ["('data', 'fsdp', 'tensor')"]}


@pytest.mark.parametrize("kv_heads, cases", [
    # Rows over data (whole prompts per device; 3 rows each refilled from its own queue), over data x fsdp with
    # prompts prefilled one at a time, and kv heads split over tensor inside each data shard.
    (4, [["one", [1, 1, 1], None, None], ["data", [4, 1, 1], 12, None], ["data_fsdp", [2, 2, 1], 8, 4],
         ["heads_tensor", [2, 1, 2], 6, None]]),
    # 2 kv heads over tensor = 4 would leave one each: rows split over every axis, 3 prompts' requests per device
    # straddling prompts (6 requests of prompt 0 and 1 ... over 8 devices), all rows at once.
    (2, [["one", [1, 1, 1], None, None], ["rows_everywhere", [2, 1, 4], None, None]]),
])
def test_sharded_engine_equals_one_device(kv_heads, cases):
    """Rows split over 8 fake devices, each running the engine (prefill, refill, shrinking, fused score) on its own
    share of the requests, sample what one device samples: tokens, lengths, log-probs and scores."""
    import json
    import os
    import sys

    env = {**os.environ, "XLA_FLAGS": xla_flags(8), "JAX_PLATFORMS": "cpu"}
    proc = forkserver.run([sys.executable, "-c", SHARDED_SCRIPT, str(kv_heads), json.dumps(cases)], env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    one = out.pop("one")
    assert len(set(np.ravel(one["lengths"]))) > 4  # ragged: rows finish, refill and shrink at different steps
    for name, got in out.items():
        assert got["spec"] == SPECS[name], (name, got["spec"])
        for field in ("tokens", "lengths"):
            np.testing.assert_array_equal(got[field], one[field], err_msg=f"{name}: {field}")
        for field in ("logprobs", "scores"):
            np.testing.assert_allclose(got[field], one[field], atol=1e-5, err_msg=f"{name}: {field}")
