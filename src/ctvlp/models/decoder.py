"""Report-generation decoder (COLIPRI's third objective on image-report batches): a small causal
transformer that reads the vision tower's tokens through cross-attention.

Tokens: the text tower's tokenizer (MiniLM's BERT WordPiece); :func:`special_token_ids` gives its
(bos, eos, pad) = ([CLS], [SEP], [PAD]). Reports are right-padded; positions are absolute indices.
Memory: the vision tower's tokens (B, N, C_img) after its final norm, with ``token_mask`` (B, N) bool
(True on real tokens) as the cross-attention key padding mask; padded memory tokens never influence
the output. Every attention goes through ``F.scaled_dot_product_attention`` (flash/efficient kernels
on GPU); masks are ``None`` whenever nothing needs masking, so those kernels stay available.

Decoding: :meth:`ReportDecoder.generate` (greedy or beam search). With ``use_cache=True`` a
:class:`DecoderCache` holds each layer's self-attention keys/values (preallocated, filled one step at
a time) and cross-attention keys/values (computed once per sequence); ``use_cache=False`` recomputes
the whole prefix and the memory projections every step (the reference). Returned sequences are the
new tokens after bos, ending with eos when it was generated. A sequence's score is its summed
log-probability divided by ``len ** length_penalty`` (len counts the returned tokens, eos included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DecoderConfig:
    """Architecture of a :class:`ReportDecoder`."""

    vocab_size: int = 30522
    """Token vocabulary (MiniLM's BERT WordPiece: 30522)."""
    width: int = 256
    """Token dimension C."""
    depth: int = 4
    """Number of decoder blocks."""
    heads: int = 4
    """Attention heads (width must be divisible by heads)."""
    mlp_ratio: float = 4.0
    """Hidden width of the GELU MLP / width."""
    max_length: int = 256
    """Learned positions: the longest input sequence (bos + report tokens)."""
    memory_width: int | None = None
    """Channels C_img of the image tokens (projected to ``width``); None: equal to ``width``."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    tie_embeddings: bool = True
    """The LM head reuses the token embedding matrix."""

    def __post_init__(self) -> None:
        if self.memory_width is None:
            self.memory_width = self.width
        if min(self.vocab_size, self.width, self.depth, self.heads, self.max_length, self.memory_width) < 1:
            raise ValueError("vocab_size, width, depth, heads, max_length and memory_width must be positive")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def special_token_ids(tokenizer) -> dict[str, int]:
    """(bos, eos, pad) ids of a BERT-style tokenizer: [CLS] starts a report, [SEP] ends it."""
    ids = {"bos": tokenizer.cls_token_id, "eos": tokenizer.sep_token_id, "pad": tokenizer.pad_token_id}
    if any(v is None for v in ids.values()):
        raise ValueError(f"tokenizer lacks [CLS]/[SEP]/[PAD] tokens: {ids}")
    return ids


def next_token_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       ignore_index: int = -100) -> torch.Tensor:
    """(B, L) decoder input ids (and optional (B, L) mask, nonzero on real tokens) -> (B, L) targets
    with targets[:, l] = input_ids[:, l + 1]; ``ignore_index`` at the last position and wherever the
    next token is padding."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, L); got {tuple(input_ids.shape)}")
    targets = torch.full_like(input_ids, ignore_index)  # (B, L)
    targets[:, :-1] = input_ids[:, 1:]
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must be (B, L) = {tuple(input_ids.shape)}; "
                             f"got {tuple(attention_mask.shape)}")
        real_next = torch.zeros_like(input_ids, dtype=torch.bool)  # (B, L)
        real_next[:, :-1] = attention_mask[:, 1:].bool()
        targets = targets.masked_fill(~real_next, ignore_index)
    return targets


class DecoderCache:
    """Keys/values for incremental decoding.

    ``self_kv[i]``: layer i's self-attention keys and values, buffers (B, h, capacity, d) filled up to
    ``length`` (allocated by the first :meth:`append`); ``cross_kv[i]``: its cross-attention keys and values (B, h, N, d), computed once;
    ``memory_mask``: the (B, 1, 1, N) bool key mask of the memory, or None (no padding).
    """

    def __init__(self, cross_kv: list[tuple[torch.Tensor, torch.Tensor]], memory_mask: torch.Tensor | None,
                 capacity: int):
        self.cross_kv, self.memory_mask, self.capacity = cross_kv, memory_mask, capacity
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(cross_kv)  # allocated on use
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, h, T, d) at positions [length, length + T) of ``layer``; return the filled
        keys and values (B, h, length + T, d). :meth:`advance` moves ``length`` after all layers."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions > capacity {self.capacity}")
        if self.self_kv[layer] is None:  # the first keys fix the dtype (autocast may make them half)
            b, h, _, d = k.shape
            self.self_kv[layer] = (k.new_empty(b, h, self.capacity, d), v.new_empty(b, h, self.capacity, d))
        kbuf, vbuf = self.self_kv[layer]
        kbuf[:, :, self.length:end] = k
        vbuf[:, :, self.length:end] = v
        return kbuf[:, :, :end], vbuf[:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def reorder(self, index: torch.Tensor) -> None:
        """Rows of the self-attention cache become rows ``index`` (B,) (beam search). Cross keys/values
        are left alone: beams are only reordered within their own sequence, whose memory they share."""
        n = self.length
        for kbuf, vbuf in filter(None, self.self_kv):
            kbuf[:, :, :n] = kbuf[index, :, :n]
            vbuf[:, :, :n] = vbuf[index, :, :n]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; with a :class:`DecoderCache` the new keys/values are appended
    and the queries attend to every cached position plus the causal part of the new ones."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, width // heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
                cache: DecoderCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, h, T, d)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, h, P + T, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                             dropout_p=self.dropout if self.training else 0.0)  # (B, h, T, d)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))  # (B, T, C)


class CrossAttention(nn.Module):
    """Multi-head attention of the text tokens over the (projected) image tokens."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, width // heads, dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, N, C) -> keys, values (B, h, N, d)."""
        b, n, _ = memory.shape
        k, v = self.kv(memory).view(b, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                memory_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)
        out = F.scaled_dot_product_attention(q, *kv, attn_mask=memory_mask,
                                             dropout_p=self.dropout if self.training else 0.0)  # (B, h, T, d)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))  # (B, T, C)


class DecoderBlock(nn.Module):
    """Pre-norm: x + SelfAttn(LN x), then x + CrossAttn(LN x, memory), then x + MLP(LN x)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.norm1, self.attn = nn.LayerNorm(width), CausalSelfAttention(width, heads, dropout)
        self.norm2, self.cross = nn.LayerNorm(width), CrossAttention(width, heads, dropout)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, self_mask: torch.Tensor | None, is_causal: bool,
                cross_kv: tuple[torch.Tensor, torch.Tensor], memory_mask: torch.Tensor | None,
                cache: DecoderCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), self_mask, is_causal, cache, layer))
        x = x + self.drop(self.cross(self.norm2(x), cross_kv, memory_mask))
        return x + self.drop(self.mlp(self.norm3(x)))


class ReportDecoder(nn.Module):
    """Token + learned position embeddings -> pre-norm decoder blocks -> LayerNorm -> LM head."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_length, cfg.width))
        self.memory_proj = nn.Linear(cfg.memory_width, cfg.width)
        self.memory_norm = nn.LayerNorm(cfg.width)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_embed.weight

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed (timm's convention)."""
        return {"pos_embed"}

    # ---- pieces shared by teacher forcing and decoding -------------------------------------------

    def encode_memory(self, memory: torch.Tensor, memory_mask: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """memory (B, N, C_img), memory_mask (B, N) bool or None -> projected memory (B, N, C) and the
        SDPA key mask (B, 1, 1, N), None when no token is padding."""
        if memory.dim() != 3 or memory.shape[-1] != self.cfg.memory_width:
            raise ValueError(f"memory must be (B, N, {self.cfg.memory_width}), got {tuple(memory.shape)}")
        if memory_mask is not None:
            if tuple(memory_mask.shape) != tuple(memory.shape[:2]):
                raise ValueError(f"memory_mask must be (B, N) = {tuple(memory.shape[:2])}, "
                                 f"got {tuple(memory_mask.shape)}")
            memory_mask = memory_mask.to(device=memory.device, dtype=torch.bool)
            if not bool(memory_mask.any(dim=1).all()):
                raise ValueError("memory_mask marks no real token in at least one sample")
            memory_mask = None if bool(memory_mask.all()) else memory_mask[:, None, None, :]  # (B, 1, 1, N)
        return self.memory_norm(self.memory_proj(memory)), memory_mask  # (B, N, C)

    def _embed(self, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        """input_ids (B, T) at positions [start, start + T) -> (B, T, C)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got {tuple(input_ids.shape)}")
        end = start + input_ids.shape[1]
        if end > self.cfg.max_length:
            raise ValueError(f"sequence of {end} tokens exceeds max_length={self.cfg.max_length}")
        return self.drop(self.tok_embed(input_ids) + self.pos_embed[:, start:end])  # (B, T, C)

    def _hidden(self, input_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing up to the final norm: (B, L) -> (B, L, C)."""
        x = self._embed(input_ids, 0)
        b, n = input_ids.shape
        if x.shape[0] != memory.shape[0]:
            raise ValueError(f"batch of input_ids ({b}) and memory ({memory.shape[0]}) differ")
        mem, mem_mask = self.encode_memory(memory, memory_mask)
        self_mask, is_causal = None, n > 1
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (b, n):
                raise ValueError(f"attention_mask must be (B, L) = ({b}, {n}), got {tuple(attention_mask.shape)}")
            keys = attention_mask.to(device=x.device, dtype=torch.bool)
            if not bool(keys.all()):
                causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()  # (L, L)
                eye = torch.eye(n, dtype=torch.bool, device=x.device)  # a padding query sees itself: no NaN
                self_mask, is_causal = causal & (keys[:, None, None, :] | eye), False  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, self_mask, is_causal, block.cross.memory_kv(mem), mem_mask)
        return self.norm(x)

    def forward(self, input_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: input_ids (B, L) (bos first, right-padded), memory (B, N, C_img), memory_mask
        (B, N) bool, attention_mask (B, L) (1 on real tokens) -> logits (B, L, V); position i predicts i+1."""
        return self.head(self._hidden(input_ids, memory, memory_mask, attention_mask))

    # ---- incremental decoding --------------------------------------------------------------------

    def init_cache(self, memory: torch.Tensor, memory_mask: torch.Tensor | None, capacity: int,
                   beams: int = 1) -> DecoderCache:
        """An empty cache for ``capacity`` input tokens per row, with the cross keys/values of the memory
        computed once per sequence and repeated for ``beams`` rows each (row = b * beams + beam)."""
        if not 1 <= capacity <= self.cfg.max_length:
            raise ValueError(f"cache capacity must be in [1, max_length={self.cfg.max_length}], got {capacity}")
        mem, mem_mask = self.encode_memory(memory, memory_mask)
        cross_kv = []
        for block in self.blocks:
            k, v = block.cross.memory_kv(mem)  # (B, h, N, d)
            if beams > 1:
                k, v = k.repeat_interleave(beams, dim=0), v.repeat_interleave(beams, dim=0)  # (B*beams, h, N, d)
            cross_kv.append((k, v))
        if mem_mask is not None and beams > 1:
            mem_mask = mem_mask.repeat_interleave(beams, dim=0)
        return DecoderCache(cross_kv, mem_mask, capacity)

    def step(self, input_ids: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """Feed input_ids (B, T) after the ``cache.length`` tokens already cached -> logits (B, T, V);
        the cache grows by T. Equals ``forward`` on the whole prefix, restricted to the new positions."""
        past, t = cache.length, input_ids.shape[1]
        x = self._embed(input_ids, past)
        if t == 1 or past == 0:
            self_mask, is_causal = None, t > 1  # one query sees every key; or plain causal from position 0
        else:
            rows = torch.arange(past, past + t, device=x.device)[:, None]
            self_mask, is_causal = rows >= torch.arange(past + t, device=x.device)[None, :], False  # (T, P+T)
        for i, block in enumerate(self.blocks):
            x = block(x, self_mask, is_causal, cache.cross_kv[i], cache.memory_mask, cache, i)
        cache.advance(t)
        return self.head(self.norm(x))

    def _next_logits(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
                     cache: DecoderCache | None) -> torch.Tensor:
        """Logits (B, V) after ``tokens`` (B, L): one cached step on the last token, or (no cache) the
        whole prefix recomputed with the LM head on its last position only."""
        if cache is not None:
            return self.step(tokens[:, -1:], cache)[:, -1]
        return self.head(self._hidden(tokens, memory, memory_mask)[:, -1])

    def _check_generate(self, memory: torch.Tensor, max_new_tokens: int, bos_id: int) -> None:
        if not 1 <= max_new_tokens <= self.cfg.max_length:
            raise ValueError(f"max_new_tokens must be in [1, max_length={self.cfg.max_length}], got {max_new_tokens}")
        if not 0 <= bos_id < self.cfg.vocab_size:
            raise ValueError(f"bos_id {bos_id} is outside the vocabulary of {self.cfg.vocab_size}")
        if memory.dim() != 3:
            raise ValueError(f"memory must be (B, N, C_img), got {tuple(memory.shape)}")

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, memory_mask: torch.Tensor | None, bos_id: int, eos_id: int,
                 max_new_tokens: int, num_beams: int = 1, use_cache: bool = True,
                 length_penalty: float = 1.0, early_stopping: bool = False) -> list[list[int]]:
        """Reports for memory (B, N, C_img) with memory_mask (B, N): per sample the new token ids after bos,
        ending with ``eos_id`` if generated (an eos outside the vocabulary never stops). Greedy when
        ``num_beams == 1`` (``length_penalty`` and ``early_stopping`` then play no part), beam search
        otherwise (see :meth:`beam_search`). Runs in eval mode (no dropout), restores the training flag."""
        was_training = self.training
        self.eval()
        try:
            if num_beams == 1:
                return self.greedy(memory, memory_mask, bos_id, eos_id, max_new_tokens, use_cache)
            return self.beam_search(memory, memory_mask, bos_id, eos_id, max_new_tokens, num_beams, use_cache,
                                    length_penalty, early_stopping)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def greedy(self, memory: torch.Tensor, memory_mask: torch.Tensor | None, bos_id: int, eos_id: int,
               max_new_tokens: int, use_cache: bool = True) -> list[list[int]]:
        """Greedy decoding (argmax each step); a sample stops at its first eos, the batch when all have."""
        self._check_generate(memory, max_new_tokens, bos_id)
        b = memory.shape[0]
        tokens = torch.full((b, 1), bos_id, dtype=torch.long, device=memory.device)  # (B, 1 + t)
        cache = self.init_cache(memory, memory_mask, max_new_tokens) if use_cache else None
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        for _ in range(max_new_tokens):
            nxt = self._next_logits(tokens, memory, memory_mask, cache).argmax(dim=-1)  # (B,)
            tokens = torch.cat((tokens, nxt[:, None]), dim=1)
            done |= nxt == eos_id
            if bool(done.all()):
                break
        return [_cut_at_eos(row[1:], eos_id) for row in tokens.tolist()]

    @torch.no_grad()
    def beam_search(self, memory: torch.Tensor, memory_mask: torch.Tensor | None, bos_id: int, eos_id: int,
                    max_new_tokens: int, num_beams: int = 4, use_cache: bool = True,
                    length_penalty: float = 1.0, early_stopping: bool = False) -> list[list[int]]:
        """Beam search with ``num_beams`` beams per sample. Each step keeps the best ``num_beams``
        continuations (summed log-probs) that do not end in eos; an eos continuation ranked among the
        best ``num_beams`` becomes a finished hypothesis scored sum / len ** length_penalty; at
        ``max_new_tokens`` the live beams join the hypotheses. Returns each sample's best hypothesis.

        When a sample stops searching: with ``early_stopping=False`` (default) only when no live beam
        can still beat its best hypothesis (an exact bound: log-probs only lower a sum, lengths reach at
        most ``max_new_tokens``), which matters when ``length_penalty > 0`` favours longer reports; with
        ``early_stopping=True`` (Hugging Face's meaning) as soon as it has ``num_beams`` finished
        hypotheses. ``num_beams=1`` is exactly greedy decoding with ``early_stopping=True``, and in both
        modes when ``length_penalty == 0``. No mode promises a score at least greedy's (the greedy path
        can drop out of the beam); the tests check it on random models."""
        self._check_generate(memory, max_new_tokens, bos_id)
        k, vocab = num_beams, self.cfg.vocab_size
        if not 1 <= 2 * k <= vocab:
            raise ValueError(f"num_beams must be in [1, vocab_size / 2 = {vocab // 2}], got {num_beams}")
        b, device = memory.shape[0], memory.device
        cache = self.init_cache(memory, memory_mask, max_new_tokens, beams=k) if use_cache else None
        if not use_cache:
            memory = memory.repeat_interleave(k, dim=0)
            memory_mask = None if memory_mask is None else memory_mask.repeat_interleave(k, dim=0)
        tokens = torch.full((b * k, 1), bos_id, dtype=torch.long, device=device)  # (B*k, 1 + t)
        scores = torch.zeros(b, k, device=device)
        scores[:, 1:] = float("-inf")  # all beams start equal: expand only the first
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
        done = [False] * b
        for step in range(max_new_tokens):
            logp = F.log_softmax(self._next_logits(tokens, memory, memory_mask, cache).float(), dim=-1)  # (B*k, V)
            cand = (scores[:, :, None] + logp.view(b, k, vocab)).view(b, k * vocab)
            top_scores, top_index = cand.topk(2 * k, dim=1)  # (B, 2k): at most k of them end in eos
            new_scores, new_rows = scores.clone(), torch.arange(b * k, device=device).view(b, k)
            new_tokens = torch.full((b, k), bos_id, dtype=torch.long, device=device)
            for i, (row_scores, row_index) in enumerate(zip(top_scores.tolist(), top_index.tolist())):
                if done[i]:
                    continue
                kept = 0
                for rank, (score, index) in enumerate(zip(row_scores, row_index)):
                    beam, token = divmod(index, vocab)
                    if token == eos_id:
                        if rank < k:
                            seq = tokens[i * k + beam, 1:].tolist() + [token]
                            finished[i].append((score / (step + 1) ** length_penalty, seq))
                        continue
                    new_scores[i, kept], new_rows[i, kept], new_tokens[i, kept] = score, i * k + beam, token
                    kept += 1
                    if kept == k:
                        break
                if early_stopping:
                    done[i] = len(finished[i]) >= k
                elif finished[i]:
                    best = max(score for score, _ in finished[i])
                    done[i] = _best_possible(new_scores[i].max().item(), step + 1, max_new_tokens,
                                             length_penalty) <= best
            if all(done):
                break
            rows = new_rows.view(-1)
            tokens = torch.cat((tokens[rows], new_tokens.view(-1, 1)), dim=1)
            scores = new_scores
            if cache is not None:
                cache.reorder(rows)
        length = tokens.shape[1] - 1
        for i in range(b):
            if not done[i]:
                for j, score in enumerate(scores[i].tolist()):
                    if math.isfinite(score):
                        finished[i].append((score / length ** length_penalty, tokens[i * k + j, 1:].tolist()))
        return [max(hyps, key=lambda h: h[0])[1] for hyps in finished]

    @torch.no_grad()
    def sequence_scores(self, memory: torch.Tensor, memory_mask: torch.Tensor | None, bos_id: int,
                        sequences: list[list[int]], length_penalty: float = 1.0) -> torch.Tensor:
        """Scores (B,) of the sequences ``generate`` returns: sum over the tokens of log p(token | bos,
        earlier tokens, memory), divided by len ** length_penalty (teacher forcing, eval mode)."""
        if len(sequences) != memory.shape[0] or any(len(s) == 0 for s in sequences):
            raise ValueError("need one non-empty sequence per memory sample")
        was_training = self.training
        self.eval()
        try:
            longest = max(map(len, sequences))
            ids = torch.zeros(len(sequences), longest + 1, dtype=torch.long, device=memory.device)  # bos + seq
            mask = torch.zeros_like(ids, dtype=torch.bool)
            ids[:, 0], mask[:, 0] = bos_id, True
            for i, seq in enumerate(sequences):
                ids[i, 1:len(seq) + 1] = torch.tensor(seq, dtype=torch.long)
                mask[i, 1:len(seq) + 1] = True
            logp = F.log_softmax(self(ids[:, :-1], memory, memory_mask, mask[:, :-1]).float(), dim=-1)
            token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]  # (B, longest)
            lengths = mask[:, 1:].sum(dim=1).float()
            return token_logp.sum(dim=1) / lengths ** length_penalty
        finally:
            self.train(was_training)


def _best_possible(live_sum: float, length: int, max_length: int, length_penalty: float) -> float:
    """Upper bound of the final score of a live beam with summed log-probs ``live_sum`` (<= 0) after
    ``length`` tokens: sums only fall, and sum / L ** p is largest at L = max_length for p > 0, at the
    shortest possible L otherwise."""
    final = max_length if length_penalty > 0 else min(length + 1, max_length)
    return live_sum / final ** length_penalty


def _cut_at_eos(seq: list[int], eos_id: int) -> list[int]:
    """The tokens up to and including the first eos (all of them when there is none)."""
    return seq[:seq.index(eos_id) + 1] if eos_id in seq else seq


def _init_weights(module: nn.Module) -> None:
    """GPT/timm-style init: truncated normal (std 0.02) Linear and Embedding weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
