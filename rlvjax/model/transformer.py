"""Decoder of the Qwen2 / Qwen2.5 / Qwen3 / Llama / Mistral family in Flax NNX, with an explicit KV-cache pytree.

Parameter paths mirror the Hugging Face tensor names (``layers/3/self_attn/q_proj/kernel`` for
``model.layers.3.self_attn.q_proj.weight``) so that the weight table in ``hf.py`` stays a plain regex map.

Positions are derived from the attention mask (``cumsum(mask) - 1``), so a left-padded row gets the same RoPE
phases as the unpadded sequence. In the KV cache a row's slot is its position and each row has its own length, so
rows of one batch grow, stop and restart independently.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_MASKED = float(np.finfo(np.float32).min)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; ``architecture`` is the HF family it round-trips to."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, object], ...] = ()  # HF rope_parameters minus rope_theta, as sorted items
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False  # Qwen3: an RMSNorm over each head's queries and keys, before RoPE
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    architecture: str = "qwen2"
    dtype: str = "float32"  # the stored weights (and so AdamW's moments)
    compute_dtype: str | None = None  # matmuls, activations and the KV cache; None: ``dtype``

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}; "
                "grouped-query attention needs whole groups"
            )

    @property
    def kv_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def jnp_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def jnp_compute_dtype(self):
        return jnp.dtype(self.compute_dtype or self.dtype)


# Each further block costs a ``lax.cond`` and two small dots per layer (and compile time: 1 block 11 s, 2 blocks 17 s,
# 5 blocks 33 s for the tiny engine); it pays for itself once a block is long enough that skipping it saves reads.
KV_BLOCK = 256  # the shortest block of cache slots: a cache of up to 256 slots is one block
KV_MAX_BLOCKS = 4  # blocks per layer at most: a longer cache has longer blocks


def kv_blocks(slots: int) -> tuple[int, ...]:
    """The block lengths a cache of ``slots`` slots is stored in: ``KV_BLOCK`` slots each, or longer so that there
    are at most ``KV_MAX_BLOCKS``; the last block takes the rest."""
    size = max(KV_BLOCK, -(-slots // KV_MAX_BLOCKS))
    full, rest = divmod(slots, size)
    return (size,) * full + ((rest,) if rest else ())


class KVCache(NamedTuple):
    """Per-layer keys/values and each row's filled length ``[B]``. A layer's slots are stored as blocks
    ``[B, kv_heads, S_j, head_dim]`` (``kv_blocks``): attention reads only the blocks that hold a filled slot, each
    in place (one array holding every slot would be copied chunk by chunk to read only its filled part).

    Slot ``s`` of a row holds its token at position ``s``: rows fill independently (the sampling engine refills a
    finished row with a new request while its neighbours go on), and a row sees only its own first ``length`` slots.
    Heads come before slots so that attention is a batched matmul over ``(B, kv_heads)`` reading the cache as stored
    (slots first made the sampler 1.2x slower on CPU, docs/benchmarks.md).
    """

    k: tuple[tuple[jax.Array, ...], ...]
    v: tuple[tuple[jax.Array, ...], ...]
    length: jax.Array

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
        dtype = dtype or cfg.jnp_compute_dtype
        blocks = tuple(jnp.zeros((batch, cfg.num_kv_heads, n, cfg.kv_dim), dtype) for n in kv_blocks(max_len))
        zeros = (blocks,) * cfg.num_layers
        return cls(zeros, zeros, jnp.zeros((batch,), jnp.int32))

    @classmethod
    def from_prefix(cls, k, v, lengths, slots: int) -> "KVCache":
        """A cache of ``slots`` slots whose first ones hold per-layer keys/values ``[B, kv_heads, P, head_dim]``."""
        return cls(tuple(_split(x, slots) for x in k), tuple(_split(x, slots) for x in v), lengths)

    def rows(self, index) -> "KVCache":
        """The rows ``index`` (gathered)."""
        return jax.tree.map(lambda x: x[index], self)

    def put_prefix(self, at, k, v, lengths) -> "KVCache":
        """Rows ``at [n]`` (out of range: left alone) start afresh from per-layer keys/values ``[n, kv_heads, P,
        head_dim]`` in their first ``P`` slots, ``lengths [n]`` of them filled."""
        def put(blocks, x):
            out, start = [], 0
            for b in blocks:
                n = min(b.shape[2], x.shape[2] - start)
                out.append(b if n <= 0 else b.at[at, :, :n].set(x[:, :, start:start + n].astype(b.dtype),
                                                                 mode="drop"))
                start += b.shape[2]
            return tuple(out)

        return KVCache(tuple(map(put, self.k, k)), tuple(map(put, self.v, v)),
                       self.length.at[at].set(lengths, mode="drop"))

    @staticmethod
    def joined(blocks: tuple[jax.Array, ...]) -> jax.Array:
        """A layer's blocks as one ``[B, kv_heads, S, head_dim]`` array."""
        return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=2)


def _split(x: jax.Array, slots: int) -> tuple[jax.Array, ...]:
    """``x [B, kv_heads, P, D]`` (P <= slots) zero-padded to ``slots`` and cut into ``kv_blocks(slots)``."""
    x = jnp.pad(x, ((0, 0), (0, 0), (0, slots - x.shape[2]), (0, 0)))
    return tuple(jnp.split(x, np.cumsum(kv_blocks(slots))[:-1], axis=2))


def _write(blocks: tuple[jax.Array, ...], new: jax.Array, at: jax.Array) -> tuple[jax.Array, ...]:
    """Blocks with ``new [B, kv_heads, T, D]`` written at each row's slots ``at [B] ..`` (a chunk may straddle
    blocks; slots past the cache are dropped)."""
    b, _, t, _ = new.shape
    rows, slot = jnp.arange(b)[:, None], at[:, None] + jnp.arange(t)[None, :]
    new = new.transpose(0, 2, 1, 3)  # [B, T, kv_heads, D]: the order of a scatter at [rows, :, slot]
    out, start = [], 0
    for block in blocks:
        n = block.shape[2]
        local = jnp.where((slot >= start) & (slot < start + n), slot - start, n)  # n: dropped
        out.append(block.at[rows, :, local].set(new.astype(block.dtype), mode="drop"))
        start += n
    return tuple(out)


def cached_attention(q: jax.Array, k: tuple[jax.Array, ...], v: tuple[jax.Array, ...],
                     query_slots: jax.Array, live: jax.Array | None = None) -> jax.Array:
    """``softmax(q k^T) v`` of queries ``q [B, T, kv_heads, groups, D]`` over a layer's cache blocks ``k, v``
    (``[B, kv_heads, S_j, D]`` each) at or before each query's slot ``query_slots [B, T]``.

    Only blocks holding a slot at or before the largest slot of a ``live`` query (``[B, T]``; None: all) are read
    (the others are skipped under ``lax.cond``; the other queries' outputs are then not meaningful), and their
    results merge by their maxima (an online softmax over blocks), so a step's cost follows the longest live row,
    not the allocation nor a finished row's length, and no length recompiles. Returns ``[B, kv_heads, groups, T, D]``
    in f32.
    """
    b, t, kh, g, d = q.shape
    shape = (b, kh, g, t)

    def attend(q, kb, vb, start):
        s = jnp.einsum("btkgd,bksd->bkgts", q, kb.astype(q.dtype), preferred_element_type=jnp.float32) / math.sqrt(d)
        slot = start + jnp.arange(kb.shape[2])
        s = jnp.where((slot[None, None, :] <= query_slots[:, :, None])[:, None, None], s, -jnp.inf)
        m = jnp.max(s, axis=-1)
        p = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0)[..., None])  # a row with no seen slot here: p = 0
        return m, jnp.sum(p, axis=-1), jnp.einsum("bkgts,bksd->bkgtd", p.astype(vb.dtype), vb,
                                                  preferred_element_type=jnp.float32)

    if len(k) == 1:  # one block: a plain softmax
        m, l, acc = attend(q, k[0], v[0], 0)
        return acc / l[..., None]
    skip = lambda *_: (jnp.full(shape, -jnp.inf), jnp.zeros(shape), jnp.zeros((*shape, d)))
    last, parts, start = jnp.max(query_slots if live is None else jnp.where(live, query_slots, 0)), [], 0
    for kb, vb in zip(k, v):
        run = lambda q, kb, vb, start=start: attend(q, kb, vb, start)
        parts.append(run(q, kb, vb) if start == 0 else jax.lax.cond(start <= last, run, skip, q, kb, vb))
        start += kb.shape[2]
    top = functools.reduce(jnp.maximum, [m for m, _, _ in parts])  # finite: slot 0 is seen by every query
    scale = [jnp.exp(m - top) for m, _, _ in parts]
    l = sum(c * l for c, (_, l, _) in zip(scale, parts))
    return sum(c[..., None] * acc for c, (_, _, acc) in zip(scale, parts)) / l[..., None]


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies, including the ``linear`` and ``llama3`` scalings of HF ``rope_parameters``, in float32
    as transformers computes them (float64 ones differed in the last bits of up to a third of them: a phase error
    that grows with the position, 2e-3 rad at 32k)."""
    f32, d = np.float32, cfg.kv_dim
    exponent = np.arange(0, d, 2).astype(f32) / f32(d)
    # The power correctly rounded to float32 (through float64): numpy's own float32 ``pow`` moves with the CPU's
    # SIMD kernels (1 ULP off in up to a third of them on AVX-512 hosts). torch's (SLEEF's) is within 1 ULP of the
    # correctly rounded one, and after the reciprocal a few frequencies (up to a tenth) differ from transformers' by
    # 1-2 ULP.
    inv = f32(1.0) / (np.float64(f32(cfg.rope_theta)) ** exponent.astype(np.float64)).astype(f32)
    scaling = dict(cfg.rope_scaling)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        pass
    elif kind == "linear":
        inv = inv / float(scaling["factor"])
    elif kind == "llama3":
        factor, old_len = float(scaling["factor"]), float(scaling["original_max_position_embeddings"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        wavelen = (f32(1.0) / inv) * f32(2 * math.pi)  # torch's ``scalar / tensor``: a reciprocal, then a product
        scaled = np.where(wavelen > old_len / low, inv / factor, inv)
        smooth = ((f32(1.0) / wavelen) * f32(old_len) - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv = np.where(medium, smoothed, scaled)
    else:
        raise ValueError(f"unsupported rope_type {kind!r}; rlvjax implements default, linear and llama3: remove the "
                         "rope scaling from config.json (the model then runs within its original context length) "
                         "or pick a checkpoint without it")
    return inv


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """HF's rotate-half RoPE; x ``[B, T, H, D]``, positions ``[B, T]``."""
    freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _rounded_f32(x, dtype):
    """``x`` rounded to ``dtype``, held in f32: a product or sum of two such values taken in f32 and rounded once is
    the one ``dtype`` gives (the same forward), while its gradient into a parameter shared by every token is summed
    in f32. Summed in bf16 it stalled: 100,000 tokens' bias gradient of 1 each came to 8,192 (review 2026-12-06)."""
    return x.astype(dtype).astype(jnp.float32)


class RMSNorm(nnx.Module):
    """HF's RMSNorm: normalised in f32, then ``weight * x`` in the compute dtype (taken in f32, ``_rounded_f32``)."""

    def __init__(self, dim: int, eps: float, cfg: ModelConfig):
        self.weight = nnx.Param(jnp.ones((dim,), cfg.jnp_dtype))
        self.eps, self.compute_dtype = eps, cfg.jnp_compute_dtype

    def __call__(self, x):
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        cd = self.compute_dtype
        return (_rounded_f32(self.weight[...], cd) * _rounded_f32(xf, cd)).astype(cd)


class Linear(nnx.Linear):
    """``nnx.Linear`` in the compute dtype, its bias added in f32 and rounded once (``_rounded_f32``)."""

    def __call__(self, inputs):
        if self.bias is None:
            return super().__call__(inputs)
        inputs, kernel = self.promote_dtype((inputs, self.kernel[...]), dtype=self.dtype)
        y = self.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision=self.precision,
                             preferred_element_type=jnp.float32)  # rounded once, with the bias (as XLA fused it)
        return (y + _rounded_f32(self.bias[...], inputs.dtype)).astype(inputs.dtype)


def _linear(din, dout, bias, cfg: ModelConfig, rngs):
    """Weights stored in ``cfg.dtype``, used in ``cfg.compute_dtype`` (nnx casts kernel and input per call)."""
    return Linear(din, dout, use_bias=bias, dtype=cfg.jnp_compute_dtype, param_dtype=cfg.jnp_dtype, rngs=rngs,
                  kernel_init=nnx.initializers.normal(0.02))


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, h, kh, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.kv_dim
        self.q_proj = _linear(d, h * hd, cfg.qkv_bias, cfg, rngs)
        self.k_proj = _linear(d, kh * hd, cfg.qkv_bias, cfg, rngs)
        self.v_proj = _linear(d, kh * hd, cfg.qkv_bias, cfg, rngs)
        self.o_proj = _linear(h * hd, d, cfg.o_bias, cfg, rngs)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, cfg)
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, cfg)
        self.qk_norm = cfg.qk_norm
        self.num_heads, self.num_kv_heads, self.head_dim = h, kh, hd

    def __call__(self, x, positions, inv_freq, allowed=None, kv_cache=None):
        """Without a cache, ``allowed [B, T, T]`` says which chunk tokens each query may see. With ``kv_cache = (k,
        v, length)`` the chunk is written at each row's slots ``length ..`` (its positions) and attends to every
        slot up to its own; ``allowed [B, T]`` then marks its real tokens (the others' outputs are not meaningful).
        Returns (out, (k, v)): the chunk's keys/values, or the updated cache arrays."""
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, kv_heads, T, D], the cache layout
        groups = self.num_heads // self.num_kv_heads
        q = q.reshape(b, t, self.num_kv_heads, groups, self.head_dim)
        if kv_cache is not None:
            k, v = _write(kv_cache[0], k, kv_cache[2]), _write(kv_cache[1], v, kv_cache[2])
            out = cached_attention(q, k, v, positions, allowed).astype(v[0].dtype)
        else:
            scores = jnp.einsum("btkgd,bksd->bkgts", q, k.astype(q.dtype), preferred_element_type=jnp.float32)
            scores = scores / math.sqrt(self.head_dim)
            scores = jnp.where(allowed[:, None, None], scores, _MASKED)
            probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
            out = jnp.einsum("bkgts,bksd->bkgtd", probs, v)
        out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, -1)
        return self.o_proj(out.astype(x.dtype)), (k, v)


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = _linear(d, f, False, cfg, rngs)
        self.up_proj = _linear(d, f, False, cfg, rngs)
        self.down_proj = _linear(f, d, False, cfg, rngs)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


REMAT_POLICIES = ("none", "full") + tuple(sorted(
    name for name in ("nothing_saveable", "everything_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")
    if hasattr(jax.checkpoint_policies, name)))


def remat_policy(name: str):
    """``jax.checkpoint``'s policy for a name of ``REMAT_POLICIES`` ("full": keep only each layer's input)."""
    if name not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {name!r}; valid names: {list(REMAT_POLICIES)}")
    return None if name in ("none", "full") else getattr(jax.checkpoint_policies, name)


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg)
        self.self_attn = Attention(cfg, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, positions, inv_freq, allowed=None, kv_cache=None):
        attn, kv = self.self_attn(self.input_layernorm(x), positions, inv_freq, allowed, kv_cache)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class Transformer(nnx.Module):
    """``model(input_ids, attention_mask)`` -> logits ``[B, T, V]``; ``model.forward`` adds positions and a cache."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.config = cfg
        self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.jnp_compute_dtype,
                                      param_dtype=cfg.jnp_dtype, rngs=rngs,
                                      embedding_init=nnx.initializers.normal(0.02))
        self.layers = nnx.List([DecoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg)
        self.lm_head = None if cfg.tie_word_embeddings else _linear(cfg.hidden_size, cfg.vocab_size, False, cfg, rngs)

    def __call__(self, input_ids, attention_mask=None):
        return self.forward(input_ids, attention_mask)[0]

    def forward(self, input_ids, attention_mask=None, cache: KVCache | None = None):
        """Returns ``(logits, cache)``; see ``hidden``."""
        h, cache = self.hidden(input_ids, attention_mask, cache)
        return self.logits(h), cache

    def hidden(self, input_ids, attention_mask=None, cache: KVCache | None = None, *, remat: str = "none",
               constrain=None):
        """Final-norm hidden states ``[B, T, D]`` and the updated cache (None without one).

        Without a cache the chunk attends causally to itself (``attention_mask`` marks real tokens; left or right
        padding). With one, each row's chunk is written at its slots ``cache.length ..`` and attends to all of its
        earlier slots; ``attention_mask`` then marks how many leading chunk tokens are real (each row's length grows
        by that many; what is written past them is beyond the row's length and never seen, and their outputs are not
        meaningful: only real tokens set how far the cache is read).
        ``remat`` (a name of ``REMAT_POLICIES``; no cache) recomputes each decoder layer in the backward pass,
        keeping what the policy saves: activation memory per layer instead of per model, for about one more
        forward pass. The layers then run under ``lax.scan`` over their weights stacked in the compute dtype (one
        copy): unrolled, XLA schedules every layer's recomputation up front and keeps them all alive.
        ``constrain`` (e.g. a sharding constraint from the caller, who knows the mesh) is applied to the residual
        stream ``[B, T, D]`` before each layer: it keeps rows where the data is, so weights move instead.
        """
        b, t = input_ids.shape
        mask = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
        inv_freq = jnp.asarray(rope_inv_freq(self.config))
        allowed = None
        if cache is None:
            positions = jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
            allowed = mask[:, None, :] & jnp.tril(jnp.ones((t, t), bool))[None]
        else:
            positions = cache.length[:, None] + jnp.arange(t)[None, :]
            allowed = mask  # the real tokens: a finished row's stale length does not make the step read further

        # Rows looked up in the table's own dtype, then cast: nnx.Embed(dtype=compute) casts the whole table first,
        # so the backward pass summed each token's gradient rows in bf16 (24-31% off for frequent tokens).
        x = jnp.take(self.embed_tokens.embedding[...], input_ids, axis=0).astype(self.config.jnp_compute_dtype)
        constrain = constrain or (lambda a: a)
        if remat != "none":
            if cache is not None:
                raise ValueError("remat is for the training forward pass; sampling with a KV cache keeps nothing to "
                                 "recompute")
            return self.norm(self._scan_layers(x, positions, inv_freq, allowed, remat_policy(remat), constrain)), None
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else (cache.k[i], cache.v[i], cache.length)
            x, (k, v) = layer(constrain(x), positions, inv_freq, allowed, kv)
            new_k.append(k)
            new_v.append(v)
        x = self.norm(x)
        if cache is not None:
            cache = KVCache(tuple(new_k), tuple(new_v), cache.length + jnp.sum(mask, axis=-1, dtype=jnp.int32))
        return x, cache

    def _scan_layers(self, x, positions, inv_freq, allowed, policy, constrain):
        graphdef = nnx.graphdef(self.layers[0])
        cd = self.config.jnp_compute_dtype
        stacked = jax.tree.map(lambda *ws: jnp.stack([w.astype(cd) for w in ws]),
                               *[nnx.state(layer) for layer in self.layers])

        def one_layer(x, state):
            return nnx.merge(graphdef, state)(constrain(x), positions, inv_freq, allowed)[0], None

        return jax.lax.scan(jax.checkpoint(one_layer, policy=policy, prevent_cse=False), x, stacked)[0]

    def logits(self, h):
        """``[..., V]`` logits in f32 (accumulated in f32 from compute-dtype operands): a bf16 logit near 20 is off
        by up to 0.06, which would show up in every log-prob and in p(Yes)."""
        cd = self.config.jnp_compute_dtype
        if self.lm_head is None:
            return jnp.einsum("...d,vd->...v", h.astype(cd), self.embed_tokens.embedding[...].astype(cd),
                              preferred_element_type=jnp.float32)
        return jnp.einsum("...d,dv->...v", h.astype(cd), self.lm_head.kernel[...].astype(cd),
                          preferred_element_type=jnp.float32)
