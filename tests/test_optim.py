"""Optimiser groups, the float32 Muon path vs torch's Muon and a float64 reference, exact resume, schedule."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim import _muon

from ctvlp.train import optim
from ctvlp.train.optim import (CombinedOptimizer, Muon, OptimConfig, build_optimizer, newton_schulz, param_groups,
                               resolve_ns_dtype)
from ctvlp.train.schedule import build_scheduler, lr_multiplier

COEFFS = (_muon.DEFAULT_A, _muon.DEFAULT_B, _muon.DEFAULT_C)


def reference_newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Plain float64 quintic Newton-Schulz with torch's coefficients (no addmm, no in-place ops)."""
    a, b, c = COEFFS
    x = g.double().T if g.shape[0] > g.shape[1] else g.double()
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def reference_muon(w0, grad_fn, steps, lr, wd, momentum, nesterov):
    """Muon as documented by torch (momentum lerp, Nesterov, decoupled decay, sqrt(max(1, A/B)) lr), in float64."""
    w, buf = w0.double().clone(), torch.zeros_like(w0, dtype=torch.float64)
    for _ in range(steps):
        g = grad_fn(w)
        buf = momentum * buf + (1 - momentum) * g
        update = reference_newton_schulz((1 - momentum) * g + momentum * buf if nesterov else buf)
        w = w * (1 - lr * wd) - lr * math.sqrt(max(1.0, w.shape[0] / w.shape[1])) * update
    return w


def quadratic_problem(shape=(48, 32), seed=0):
    """W0 and grad(W) of 0.5 ||W X - Y||^2 (the gradient depends on W, so paths can drift apart)."""
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(shape, generator=gen)
    x, y = torch.randn(shape[1], 64, generator=gen), torch.randn(shape[0], 64, generator=gen)
    return w0, lambda w: (w @ x.to(w.dtype) - y.to(w.dtype)) @ x.to(w.dtype).T


def run_muon(opt_cls, w0, grad_fn, steps, **kwargs):
    w = nn.Parameter(w0.clone())
    opt = opt_cls([w], **kwargs)
    for _ in range(steps):
        w.grad = grad_fn(w.detach())
        opt.step()
    return w.detach()


# -- Newton-Schulz -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (32, 32)])
def test_newton_schulz_in_bf16_is_torchs_own(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours = newton_schulz(g, COEFFS, 5, 1e-7, dtype=torch.bfloat16)
    assert ours.dtype == torch.bfloat16 and torch.equal(ours, _muon._zeropower_via_newtonschulz(g, COEFFS, 5, 1e-7))


@pytest.mark.parametrize("shape", [(96, 32), (32, 96), (64, 64)])
def test_newton_schulz_fp32_matches_float64_reference(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    ours = newton_schulz(g, COEFFS, 5, 1e-7)
    assert ours.dtype == torch.float32 and ours.shape == shape
    torch.testing.assert_close(ours.double(), reference_newton_schulz(g), atol=5e-6, rtol=0)
    singular = torch.linalg.svdvals(ours.double())  # the quintic maps singular values into ~(0.5, 1.5)
    assert 0.3 < singular.min() and singular.max() < 1.3


def test_newton_schulz_leaves_its_input_alone():
    g = torch.randn(8, 4)
    before = g.clone()
    newton_schulz(g, COEFFS, 5, 1e-7)
    assert torch.equal(g, before)


# -- Muon step ---------------------------------------------------------------------------------

@pytest.mark.parametrize("nesterov", [True, False])
def test_fp32_muon_matches_float64_reference(nesterov):
    w0, grad_fn = quadratic_problem()
    kwargs = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.9, "nesterov": nesterov}
    ours = run_muon(Muon, w0, grad_fn, 4, ns_dtype=torch.float32, **kwargs)
    expected = reference_muon(w0, grad_fn, 4, kwargs["lr"], kwargs["weight_decay"], kwargs["momentum"], nesterov)
    torch.testing.assert_close(ours.double(), expected, atol=4e-6, rtol=0)


def test_fp32_muon_matches_torch_muon_to_bf16_tolerance():
    w0, grad_fn = quadratic_problem(seed=3)
    ours = run_muon(Muon, w0, grad_fn, 4, lr=0.02, ns_dtype=torch.float32)
    torch_bf16 = run_muon(torch.optim.Muon, w0, grad_fn, 4, lr=0.02)
    ours_bf16 = run_muon(Muon, w0, grad_fn, 4, lr=0.02, ns_dtype=torch.bfloat16)
    assert torch.equal(ours_bf16, torch_bf16)  # bf16 is torch's own path, untouched
    moved_ours, moved_torch = ours - w0, torch_bf16 - w0
    assert (moved_ours - moved_torch).norm() / moved_torch.norm() < 2e-2
    assert not torch.equal(ours, torch_bf16)  # ... but fp32 really is a different computation


def test_fp32_step_restores_torchs_iteration_even_on_error():
    original = _muon._zeropower_via_newtonschulz
    w = nn.Parameter(torch.randn(4, 3))
    opt = Muon([w], ns_dtype=torch.float32)

    def failing_closure():
        assert _muon._zeropower_via_newtonschulz is not original
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing_closure)
    assert _muon._zeropower_via_newtonschulz is original


def test_step_hooks_run_once_per_step():
    torch.optim.Muon([nn.Parameter(torch.randn(2, 2))])  # wraps torch's step with the hook runner
    w = nn.Parameter(torch.randn(4, 3))
    opt, calls = Muon([w], ns_dtype=torch.float32), []
    opt.register_step_pre_hook(lambda *_: calls.append(1))
    w.grad = torch.randn(4, 3)
    opt.step()
    assert calls == [1]


def test_ns_dtype_auto_and_bad_values(monkeypatch):
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else None
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    if flags is not None:
        assert optim.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_tile"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not optim.cpu_has_native_bf16()
    for native, expected in [(True, torch.bfloat16), (False, torch.float32)]:
        monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: native)
        assert resolve_ns_dtype("auto", torch.device("cpu")) == expected
        assert resolve_ns_dtype("auto", torch.device("cuda")) == torch.bfloat16
        assert resolve_ns_dtype("float32", torch.device("cuda")) == torch.float32
    assert resolve_ns_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="ns_dtype"):
        Muon([nn.Parameter(torch.randn(2, 2))], ns_dtype=torch.float16)


# -- parameter groups --------------------------------------------------------------------------

class Toy(nn.Module):
    """Embedding, two blocks (matrices, norm, biases), a head, a logit scale, a learned position, a frozen matrix."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.pos_embed = nn.Parameter(torch.zeros(5, 8))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
                                    for _ in range(2))
        self.head = nn.Linear(8, 3)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.frozen = nn.Linear(8, 8, bias=False).requires_grad_(False)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward(self, ids):
        x = self.embed(ids) + self.pos_embed[: ids.shape[1]]  # (B, L, 8)
        for block in self.blocks:
            x = x + block(x)
        return self.head(self.frozen(x)).mean() * self.logit_scale


def group_names(groups) -> dict[str, set[str]]:
    return {g["kind"]: set(g["param_names"]) for g in groups}


def test_param_groups_muon_rule():
    groups = param_groups(Toy(), OptimConfig(lr=1e-3, muon_lr=0.02, weight_decay=0.1))
    names = group_names(groups)
    assert names["muon"] == {f"blocks.{i}.{j}.weight" for i in (0, 1) for j in (1, 3)}
    assert names["decay"] == {"head.weight"}
    assert names["no_decay"] == {"embed.weight", "pos_embed", "head.bias", "logit_scale"} | {
        f"blocks.{i}.{j}.{k}" for i in (0, 1) for j, k in [(0, "weight"), (0, "bias"), (1, "bias"), (3, "bias")]}
    assert [(g["kind"], g["lr"], g["weight_decay"]) for g in groups] == [
        ("muon", 0.02, 0.1), ("decay", 1e-3, 0.1), ("no_decay", 1e-3, 0.0)]


def test_param_groups_adamw_and_custom_rule():
    names = group_names(param_groups(Toy(), OptimConfig(name="adamw")))
    assert set(names) == {"decay", "no_decay"} and names["decay"] == {
        "head.weight", *(f"blocks.{i}.{j}.weight" for i in (0, 1) for j in (1, 3))}
    only_head = group_names(param_groups(Toy(), OptimConfig(), is_muon=lambda name, p: name == "head.weight"))
    assert only_head["muon"] == {"head.weight"}
    assert group_names(param_groups(Toy(), OptimConfig(muon_pattern=r"^head\.")))["muon"] == {"head.weight"}
    with pytest.raises(ValueError, match="no trainable 2-D parameter matches"):
        param_groups(Toy(), OptimConfig(muon_pattern="nothing-matches"))
    with pytest.raises(ValueError, match="Muon needs 2-D"):
        param_groups(Toy(), OptimConfig(), is_muon=lambda name, p: name == "logit_scale")


def test_param_groups_hugging_face_bert_layers():
    from ctvlp.models.text import TextTower, TextTowerConfig

    tower = TextTower(TextTowerConfig(name="tiny", pooling="attention", freeze="all_but_last_n", trainable_layers=1))
    names = group_names(param_groups(tower, OptimConfig()))
    assert len(names["muon"]) == 6 and all(n.startswith("model.encoder.layer.1.") for n in names["muon"])
    assert names["decay"] == {"pool.attn.in_proj_weight", "pool.attn.out_proj.weight"}
    full = group_names(param_groups(TextTower(TextTowerConfig(name="tiny")), OptimConfig()))
    assert {"model.embeddings.word_embeddings.weight", "model.embeddings.position_embeddings.weight"} <= full["no_decay"]
    assert len(full["muon"]) == 12


# -- combined optimiser, schedule, resume ------------------------------------------------------

def train(model, opt, sched, steps, start=0):
    for s in range(start, start + steps):
        ids = torch.randint(0, 10, (4, 5), generator=torch.Generator().manual_seed(s))
        model(ids).square().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()


def test_combined_optimizer_schedule_and_exact_resume():
    cfg = OptimConfig(lr=1e-2, muon_lr=0.05, warmup_steps=2, min_lr_ratio=0.1, ns_dtype="float32")
    torch.manual_seed(0)
    straight = Toy()
    start = {k: v.clone() for k, v in straight.state_dict().items()}
    opt = build_optimizer(straight, cfg)
    sched = build_scheduler(opt, cfg, total_steps=6)
    assert isinstance(opt, CombinedOptimizer) and opt.optimizers[0].ns_dtype == torch.float32
    assert [g["lr"] for g in opt.param_groups] == [0.05 / 2, 1e-2 / 2, 1e-2 / 2]
    train(straight, opt, sched, 6)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * lr_multiplier(6, 2, 6, 0.1))

    resumed = Toy()
    resumed.load_state_dict(start)
    opt1 = build_optimizer(resumed, cfg)
    sched1 = build_scheduler(opt1, cfg, total_steps=6)
    train(resumed, opt1, sched1, 3)
    buffer = io.BytesIO()
    torch.save({"model": resumed.state_dict(), "opt": opt1.state_dict(), "sched": sched1.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    again = Toy()
    again.load_state_dict(state["model"])
    opt2 = build_optimizer(again, cfg)
    sched2 = build_scheduler(opt2, cfg, total_steps=6)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert opt2.optimizers[1].param_groups[0] is opt2.param_groups[1] and opt2.optimizers[0].state is opt2.state
    train(again, opt2, sched2, 3, start=3)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_build_optimizer_adamw_is_plain_adamw():
    opt = build_optimizer(Toy(), OptimConfig(name="adamw", betas=(0.8, 0.9)))
    assert type(opt) is torch.optim.AdamW and all(g["betas"] == (0.8, 0.9) for g in opt.param_groups)


def test_schedule_golden_values():
    values = [lr_multiplier(s, warmup_steps=4, total_steps=14, min_lr_ratio=0.1) for s in (0, 1, 3, 4, 9, 14, 20)]
    assert values == pytest.approx([0.25, 0.5, 1.0, 1.0, 0.55, 0.1, 0.1])
    # halfway into the second half of the cosine: 0.1 + 0.9 * (1 + cos(3 pi / 4)) / 2
    assert lr_multiplier(11.5, 4, 14, 0.1) == pytest.approx(0.1 + 0.45 * (1 - math.sqrt(0.5)))
    assert lr_multiplier(0, 0, 10, 0.0) == 1.0 and lr_multiplier(10, 0, 10, 0.0) == pytest.approx(0.0)


@pytest.mark.parametrize("bad", [{"name": "sgd"}, {"ns_dtype": "float16"}, {"lr": 0.0}, {"betas": (0.9, 1.0)},
                                 {"ns_steps": 0}, {"min_lr_ratio": 1.5}, {"muon_pattern": "("}])
def test_bad_config(bad):
    with pytest.raises(ValueError):
        OptimConfig(**bad)
