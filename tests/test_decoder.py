"""Report decoder: teacher forcing vs KV-cached steps, cached vs uncached greedy, beam search (k=1 is
greedy, never worse than greedy here), eos, memory padding, batches of different memory lengths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctvlp.losses.caption import caption_loss
from ctvlp.models.decoder import DecoderConfig, ReportDecoder, next_token_targets, special_token_ids

MEM_WIDTH = 24


pytestmark = pytest.mark.usefixtures("one_thread")


def decoder(seed: int = 0, sharpen: float = 8.0, **overrides) -> ReportDecoder:
    """A tiny decoder; ``sharpen`` scales the init so next-token distributions are peaked (eos fires,
    beams and greedy disagree) instead of near-uniform."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=40, width=32, depth=2, heads=4, max_length=24, memory_width=MEM_WIDTH)
    net = ReportDecoder(DecoderConfig(**{**cfg, **overrides})).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() >= 2 and not name.startswith("memory_norm"):
                p.mul_(sharpen)
    return net


def memory(batch: int = 3, n: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, n, MEM_WIDTH, generator=torch.Generator().manual_seed(seed))


def padded_mask(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # (B, N)


def test_config_validation():
    assert DecoderConfig(width=32, heads=4).memory_width == 32
    with pytest.raises(ValueError, match="divisible"):
        DecoderConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="dropout"):
        DecoderConfig(dropout=1.0)
    with pytest.raises(ValueError, match="positive"):
        DecoderConfig(depth=0)


def test_forward_shape_causal_and_tied():
    net = decoder()
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    mem = memory(2)
    logits = net(ids, mem, None)
    assert logits.shape == (2, 9, 40)
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 40
    torch.testing.assert_close(net(changed, mem, None)[:, :5], logits[:, :5])  # no peeking ahead
    assert net.head.weight is net.tok_embed.weight
    assert decoder(tie_embeddings=False).head.weight is not decoder(tie_embeddings=False).tok_embed.weight
    with pytest.raises(ValueError, match="max_length"):
        net(torch.zeros(1, 25, dtype=torch.long), memory(1), None)
    with pytest.raises(ValueError, match="no real token"):
        net(ids, mem, torch.zeros(2, 7, dtype=torch.bool))


def test_right_padding_does_not_change_real_positions():
    net = decoder()
    ids = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = padded_mask([8, 5], 8)
    logits = net(ids, memory(2), None, mask)
    torch.testing.assert_close(logits[1, :5], net(ids[1:, :5], memory(2)[1:], None)[0])
    assert torch.isfinite(net(ids, memory(2), None, ~mask | (torch.arange(8) == 7))).all()  # left padding: no NaN


def test_cached_steps_equal_teacher_forcing():
    """Prefill 3 tokens, then one token per step: logits allclose to forward on the whole prefix."""
    net = decoder()
    ids = torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(2))
    mem, mask = memory(3), padded_mask([7, 4, 2], 7)
    full = net(ids, mem, mask)
    cache = net.init_cache(mem, mask, capacity=12)
    steps = [net.step(ids[:, :3], cache)] + [net.step(ids[:, i:i + 1], cache) for i in range(3, 12)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="full"):
        net.step(ids[:, :1], cache)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_and_uncached_greedy_agree(seed):
    net, mem, mask = decoder(seed), memory(3, seed=seed), padded_mask([7, 3, 5], 7)
    cached = net.generate(mem, mask, bos_id=1, eos_id=-1, max_new_tokens=20, use_cache=True)
    uncached = net.generate(mem, mask, bos_id=1, eos_id=-1, max_new_tokens=20, use_cache=False)
    assert cached == uncached and all(len(s) == 20 for s in cached)
    beams = [net.generate(mem, mask, 1, -1, 20, num_beams=3, use_cache=c) for c in (True, False)]
    assert beams[0] == beams[1]


def test_greedy_is_argmax_of_teacher_forcing():
    net, mem = decoder(), memory(2)
    seqs = net.generate(mem, None, bos_id=1, eos_id=-1, max_new_tokens=10)
    ids = torch.tensor([[1] + s[:-1] for s in seqs])
    assert net(ids, mem, None).argmax(-1).tolist() == seqs


def test_eos_stops_each_sample():
    net, mem = decoder(), memory(3)
    free = net.generate(mem, None, bos_id=1, eos_id=-1, max_new_tokens=16)
    eos = free[0][3]
    stopped = net.generate(mem, None, bos_id=1, eos_id=eos, max_new_tokens=16)
    for s_free, s in zip(free, stopped):
        cut = s_free.index(eos) + 1 if eos in s_free else len(s_free)
        assert s == s_free[:cut]
    assert stopped[0][-1] == eos and len(stopped[0]) <= 4
    for seq in net.generate(mem, None, bos_id=1, eos_id=eos, max_new_tokens=16, num_beams=3):
        assert (eos not in seq and len(seq) == 16) or seq.index(eos) == len(seq) - 1


@pytest.mark.parametrize("eos_from", [None, 2])
def test_beam_search_with_one_beam_is_greedy(eos_from):
    """Exactly greedy with early stopping (any length penalty) and, without it, at length_penalty 0."""
    net, mem, mask = decoder(), memory(3), padded_mask([7, 2, 5], 7)
    eos = -1
    if eos_from is not None:
        eos = net.generate(mem, mask, 1, -1, 12)[1][eos_from]
    greedy = net.greedy(mem, mask, 1, eos, 12)
    assert eos == -1 or any(s[-1] == eos for s in greedy)
    for use_cache in (True, False):
        for early, penalty in ((True, 1.0), (True, 0.0), (False, 0.0)):
            assert net.beam_search(mem, mask, 1, eos, 12, 1, use_cache, penalty, early) == greedy


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_scores_at_least_greedy(seed, length_penalty):
    """Not a theorem of beam search, checked on random models (on 12 seeds x 4 samples: always without
    early stopping; with it, 5 of 48 samples fall below greedy at length_penalty 1)."""
    net, mem = decoder(seed, sharpen=3.0), memory(4, seed=seed)
    eos = net.generate(mem, None, 1, -1, 10)[0][4]
    greedy = net.generate(mem, None, 1, eos, 10)
    beam = net.generate(mem, None, 1, eos, 10, num_beams=4, length_penalty=length_penalty)
    g = net.sequence_scores(mem, None, 1, greedy, length_penalty)
    b = net.sequence_scores(mem, None, 1, beam, length_penalty)
    assert (b >= g - 1e-5).all(), (b, g)
    assert (b > g + 1e-3).any() or beam == greedy  # when they differ, the beams found better somewhere


def test_sequence_scores_of_greedy_are_summed_max_log_probs():
    net, mem = decoder(), memory(2)
    seqs = net.generate(mem, None, 1, -1, 6)
    logp = F.log_softmax(net(torch.tensor([[1] + s[:-1] for s in seqs]), mem, None), dim=-1)
    expected = logp.max(-1).values.sum(-1)
    torch.testing.assert_close(net.sequence_scores(mem, None, 1, seqs, 0.0), expected)
    torch.testing.assert_close(net.sequence_scores(mem, None, 1, seqs, 1.0), expected / 6)


def test_padded_memory_tokens_are_ignored():
    net, mask = decoder(), padded_mask([7, 3, 5], 7)
    mem = memory(3)
    other = torch.where(mask[..., None], mem, 100 * torch.randn(mem.shape))
    ids = torch.randint(0, 40, (3, 10), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(net(ids, other, mask), net(ids, mem, mask), rtol=0, atol=0)
    for beams in (1, 3):
        assert net.generate(other, mask, 1, -1, 12, beams) == net.generate(mem, mask, 1, -1, 12, beams)
    assert not torch.allclose(net(ids, other, None), net(ids, mem, None))  # the mask is what hides them


@pytest.mark.parametrize("beams", [1, 3])
def test_batch_of_different_memory_lengths(beams):
    """Each sample decoded in a padded batch equals it decoded alone with its unpadded memory."""
    net, lengths = decoder(), [7, 2, 5]
    mem = memory(3)
    batch = net.generate(mem, padded_mask(lengths, 7), 1, -1, 12, beams)
    alone = [net.generate(mem[i:i + 1, :n], None, 1, -1, 12, beams)[0] for i, n in enumerate(lengths)]
    assert batch == alone
    ids = torch.randint(0, 40, (3, 6), generator=torch.Generator().manual_seed(4))
    logits = net(ids, mem, padded_mask(lengths, 7))
    for i, n in enumerate(lengths):
        torch.testing.assert_close(logits[i], net(ids[i:i + 1], mem[i:i + 1, :n], None)[0], rtol=1e-5, atol=1e-5)


def test_generate_runs_in_eval_mode_and_checks_arguments():
    net, mem = decoder(dropout=0.5), memory(2)
    net.train()
    first = net.generate(mem, None, 1, -1, 8)
    assert net.training and net.generate(mem, None, 1, -1, 8) == first
    with pytest.raises(ValueError, match="max_new_tokens"):
        net.generate(mem, None, 1, -1, 25)
    with pytest.raises(ValueError, match="num_beams"):
        net.generate(mem, None, 1, -1, 8, num_beams=21)


def lm_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Teacher forcing through the shared caption loss (the decoder has no loss of its own)."""
    return caption_loss(logits, next_token_targets(ids, mask))


def test_teacher_forcing_loss_ignores_padding():
    net = decoder()
    ids = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(5))
    mask = padded_mask([8, 5], 8)
    logits = net(ids, memory(2), None, mask)
    manual = torch.cat([F.cross_entropy(logits[0, :7], ids[0, 1:], reduction="none"),
                        F.cross_entropy(logits[1, :4], ids[1, 1:5], reduction="none")]).mean()
    torch.testing.assert_close(lm_loss(logits, ids, mask), manual)
    loss = lm_loss(net(ids, memory(2), None, mask), ids, mask)
    loss.backward()
    assert net.memory_proj.weight.grad.abs().sum() > 0


def test_with_the_text_towers_tokenizer():
    """MiniLM's WordPiece tokenizer: [CLS]/[SEP]/[PAD] as bos/eos/pad, full vocabulary, decodable output."""
    import transformers

    from ctvlp.models.text import minilm_dir

    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    ids = special_token_ids(tok)
    assert ids == {"bos": 101, "eos": 102, "pad": 0}
    net = decoder(vocab_size=tok.vocab_size, sharpen=1.0)
    batch = tok(["No pleural effusion.", "Small nodule in the right upper lobe."], padding=True, return_tensors="pt")
    logits = net(batch["input_ids"], memory(2), None, batch["attention_mask"])
    assert logits.shape == (*batch["input_ids"].shape, tok.vocab_size)
    assert lm_loss(logits, batch["input_ids"], batch["attention_mask"]).item() == pytest.approx(
        torch.log(torch.tensor(float(tok.vocab_size))).item(), rel=0.05)
    seqs = net.generate(memory(2), None, ids["bos"], ids["eos"], 5)
    assert all(isinstance(tok.decode(s, skip_special_tokens=True), str) for s in seqs)
