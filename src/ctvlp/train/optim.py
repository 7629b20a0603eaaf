"""Optimiser: Muon for the 2-D weight matrices of transformer blocks, AdamW for everything else.

Which parameter goes where (SigVLP's released code; ``param_groups``):

- **Muon**: trainable parameters with ``ndim == 2`` whose name matches ``OptimConfig.muon_pattern``
  (default: a ``blocks.<i>.`` / ``layer.<i>.`` / ``layers.<i>.`` path component, i.e. the ViT's
  blocks and a Hugging Face encoder's ``encoder.layer.<i>``), excluding ``nn.Embedding`` weights.
  A different rule can be passed to ``param_groups``/``build_optimizer`` as a predicate.
- **AdamW** (betas 0.9, 0.95): embeddings, norms, biases, patch embedding, pooling heads,
  projections, logit scale and bias. No weight decay on 1-D/0-D parameters, ``nn.Embedding`` weights
  and the names a module lists in ``no_weight_decay()`` (timm's convention).
- Frozen parameters (``requires_grad=False``) are left out.

``torch.optim.Muon`` orthogonalises each update with a Newton-Schulz iteration in bfloat16, which GPUs
want. A CPU without native bf16 dot products (AVX2; AVX-512 without the BF16 extension) runs bf16
matmuls through slow fallback kernels: the iteration is 15-25x slower than in float32
(``benchmarks/optim_step.py``). :class:`Muon` extends torch's optimiser with ``ns_dtype``: with
float32 the same iteration (same coefficients, same steps) runs in float32; everything else is
torch's own step. ``OptimConfig.ns_dtype='auto'`` picks bfloat16 on CUDA and on CPUs with native bf16
(AVX512-BF16 or AMX, where bf16 is ~2x faster than float32), float32 on other CPUs.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim import _muon

MuonRule = Callable[[str, nn.Parameter], bool]
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class OptimConfig:
    """Optimiser groups, their hyper-parameters and the learning-rate schedule."""

    name: Literal["muon", "adamw"] = "muon"
    """``muon``: Muon for block matrices + AdamW for the rest; ``adamw``: AdamW for everything."""
    lr: float = 1e-3
    """Peak learning rate of the AdamW groups."""
    muon_lr: float = 0.02
    """Peak learning rate of the Muon group (torch's ``adjust_lr_fn='original'`` scaling applies)."""
    weight_decay: float = 0.05
    """Decoupled weight decay of matrices (both optimisers); 1-D parameters and embeddings get none."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    momentum: float = 0.95
    """Muon momentum (Nesterov)."""
    ns_steps: int = 5
    """Newton-Schulz iterations per Muon update."""
    ns_dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """Precision of the Newton-Schulz iteration; ``auto``: bfloat16 on CUDA and on CPUs with native bf16
    dot products (AVX512-BF16, AMX), float32 on other CPUs."""
    muon_pattern: str = r"(^|\.)(blocks|layers?)\.\d+\."
    """Regex (``re.search`` on the parameter name) marking transformer-block parameters for Muon."""
    warmup_steps: int = 100
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """The cosine decays each group's learning rate to this fraction of its peak at the run's last step."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""

    def __post_init__(self) -> None:
        if self.name not in ("muon", "adamw"):
            raise ValueError(f"optimiser name must be 'muon' or 'adamw', got {self.name!r}")
        if self.ns_dtype not in ("auto", *NS_DTYPES):
            raise ValueError(f"ns_dtype must be 'auto', 'bfloat16' or 'float32', got {self.ns_dtype!r}")
        if min(self.lr, self.muon_lr) <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("need lr > 0, muon_lr > 0, weight_decay >= 0, grad_clip >= 0")
        if not all(0 <= b < 1 for b in self.betas) or not 0 <= self.momentum < 1:
            raise ValueError(f"betas {self.betas} and momentum {self.momentum} must lie in [0, 1)")
        if not 1 <= self.ns_steps < 100 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("need 1 <= ns_steps < 100, warmup_steps >= 0, 0 <= min_lr_ratio <= 1")
        try:
            re.compile(self.muon_pattern)
        except re.error as err:
            raise ValueError(f"muon_pattern {self.muon_pattern!r} is not a valid regex: {err}") from err


# -- Newton-Schulz in a chosen precision ----------------------------------------------------------

def newton_schulz(grad: Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Torch's quintic Newton-Schulz orthogonalisation (``torch.optim._muon``), run in ``dtype``:
    X <- G / ||G||_F (transposed so rows <= columns); k times: A = X X^T, X <- a X + (b A + c A^2) X."""
    if grad.ndim != 2:
        raise ValueError(f"Newton-Schulz needs a 2-D matrix, got shape {tuple(grad.shape)}")
    a, b, c = ns_coefficients
    tall = grad.size(0) > grad.size(1)
    x = grad.to(dtype).T if tall else grad.to(dtype)  # (m, n), m <= n
    x = x / x.norm().clamp(min=eps)  # out of place: ``grad`` may be the momentum buffer itself
    for _ in range(ns_steps):
        gram = x @ x.T  # (m, m)
        update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, update, x, beta=a)
    return x.T if tall else x


@contextlib.contextmanager
def _orthogonalise_in(dtype: torch.dtype) -> Iterator[None]:
    """Point torch's Muon at :func:`newton_schulz` in ``dtype`` while a step runs (torch's step looks
    its module-level ``_zeropower_via_newtonschulz`` up on every call: the one seam it offers)."""
    original = _muon._zeropower_via_newtonschulz
    _muon._zeropower_via_newtonschulz = functools.partial(newton_schulz, dtype=dtype)
    try:
        yield
    finally:
        _muon._zeropower_via_newtonschulz = original


def _is_step_hook_wrapper(fn) -> bool:
    return bool(getattr(fn, "hooked", False))


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` with the Newton-Schulz iteration in ``ns_dtype`` (bfloat16: torch's own path).

    The float32 path swaps torch's module-level iteration for the duration of a step, so two threads
    stepping Muon optimisers with different ``ns_dtype`` in one process would interfere.
    """

    def __init__(self, params, *, ns_dtype: torch.dtype = torch.bfloat16, **kwargs):
        if ns_dtype not in (torch.bfloat16, torch.float32, torch.float64):
            raise ValueError(f"ns_dtype must be torch.bfloat16, float32 or float64, got {ns_dtype}")
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        # torch.optim.Muon.step without the step-hook wrapper torch adds once a torch Muon exists:
        # this class's own step is wrapped already, so hooks must not run twice.
        torch_step = inspect.unwrap(torch.optim.Muon.step, stop=lambda fn: not _is_step_hook_wrapper(fn))
        if self.ns_dtype == torch.bfloat16:
            return torch_step(self, closure)
        with _orthogonalise_in(self.ns_dtype):
            return torch_step(self, closure)


# -- one optimiser over Muon and AdamW ------------------------------------------------------------

class CombinedOptimizer(Optimizer):
    """Several optimisers over disjoint groups, seen as one: ``param_groups`` and ``state`` are the
    children's own (shared objects), so LR schedulers, ``zero_grad`` and ``state_dict`` /
    ``load_state_dict`` work unchanged and a resumed run continues exactly."""

    def __init__(self, optimizers: list[Optimizer]):
        if not optimizers:
            raise ValueError("CombinedOptimizer needs at least one optimiser")
        self.optimizers = list(optimizers)
        super().__init__([g for opt in self.optimizers for g in opt.param_groups], defaults={})
        self._share()

    def _share(self) -> None:
        """Make each child use this optimiser's group dicts and state (after init and after a load)."""
        start = 0
        for opt in self.optimizers:
            opt.param_groups = self.param_groups[start:start + len(opt.param_groups)]
            opt.state = self.state
            start += len(opt.param_groups)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._share()


# -- groups and the optimiser of a model ---------------------------------------------------------

def block_matrix_rule(pattern: str) -> MuonRule:
    """The default Muon rule: a 2-D parameter whose name matches ``pattern`` (``re.search``)."""
    regex = re.compile(pattern)
    return lambda name, p: p.ndim == 2 and regex.search(name) is not None


def _embedding_weights(model: nn.Module) -> set[str]:
    return {f"{m}.weight" if m else "weight" for m, mod in model.named_modules() if isinstance(mod, nn.Embedding)}


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names that get no weight decay: ``nn.Embedding`` weights and every module's ``no_weight_decay()``."""
    names = _embedding_weights(model)
    for prefix, module in model.named_modules():
        if hasattr(module, "no_weight_decay"):
            names |= {f"{prefix}.{n}" if prefix else n for n in module.no_weight_decay()}
    return names


def param_groups(model: nn.Module, cfg: OptimConfig, is_muon: MuonRule | None = None) -> list[dict]:
    """Non-empty groups ``muon`` (only when ``cfg.name == 'muon'``), ``decay`` and ``no_decay``, each with
    ``kind``, ``lr``, ``weight_decay`` and ``param_names``; ``is_muon`` overrides ``cfg.muon_pattern``."""
    is_muon = is_muon or block_matrix_rule(cfg.muon_pattern)
    embeddings, no_decay = _embedding_weights(model), no_weight_decay_names(model)
    named: dict[str, list[tuple[str, nn.Parameter]]] = {"muon": [], "decay": [], "no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if cfg.name == "muon" and name not in embeddings and is_muon(name, p):
            if p.ndim != 2:
                raise ValueError(f"the Muon rule selected {name} of shape {tuple(p.shape)}; Muon needs 2-D weights")
            named["muon"].append((name, p))
        else:
            named["no_decay" if p.ndim < 2 or name in no_decay else "decay"].append((name, p))
    if not any(named.values()):
        raise ValueError(f"{type(model).__name__} has no trainable parameters to optimise")
    if cfg.name == "muon" and not named["muon"]:
        raise ValueError(f"optimiser 'muon': no trainable 2-D parameter matches muon_pattern {cfg.muon_pattern!r}")
    settings = {"muon": (cfg.muon_lr, cfg.weight_decay), "decay": (cfg.lr, cfg.weight_decay), "no_decay": (cfg.lr, 0.0)}
    return [{"kind": kind, "params": [p for _, p in items], "param_names": [n for n, _ in items],
             "lr": settings[kind][0], "weight_decay": settings[kind][1]}
            for kind, items in named.items() if items]


ONEDNN_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_native_bf16() -> bool:
    """True when oneDNN may use bf16 dot-product instructions: the CPU has AVX512-BF16 or AMX tiles and
    ``ONEDNN_MAX_CPU_ISA`` does not cap oneDNN below them."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ONEDNN_CAPS_WITHOUT_BF16:
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_ns_dtype(ns_dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA or a CPU with native bf16, float32 on other CPUs."""
    if ns_dtype == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if native else torch.float32
    return NS_DTYPES[ns_dtype]


def build_optimizer(model: nn.Module, cfg: OptimConfig, is_muon: MuonRule | None = None) -> Optimizer:
    """AdamW over every group (``cfg.name == 'adamw'``) or a :class:`CombinedOptimizer` of
    :class:`Muon` (block matrices) and AdamW (the rest)."""
    groups = param_groups(model, cfg, is_muon)
    rest = [g for g in groups if g["kind"] != "muon"]
    adamw = torch.optim.AdamW(rest, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay) if rest else None
    if cfg.name == "adamw":
        return adamw
    muon_group = groups[0]
    muon = Muon([muon_group], lr=cfg.muon_lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                ns_steps=cfg.ns_steps, ns_dtype=resolve_ns_dtype(cfg.ns_dtype, muon_group["params"][0].device))
    return CombinedOptimizer([muon] if adamw is None else [muon, adamw])
