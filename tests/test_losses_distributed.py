"""ClipLoss and SigLipLoss on 2 CPU processes (gloo) against the single-process loss on the same
global batch.

Why the gradients compare as they do. Let the global batch of N = W * B rows be split over W ranks,
L the single-process loss on it and L_r the loss rank r returns. Both losses are built so that
(1/W) sum_r L_r = L. The all-gather's backward sums, for rank r's rows x_r, the gradients that every
rank computed for them, so rank r holds

    g_r = d(sum_r' L_r') / dx_r = W dL/dx_r      (the embeddings' gradient is W times the reference).

A parameter theta shared by all ranks (DDP) gets on rank r the chain-rule sum over its own rows,
sum_{x in x_r} g_r dx/dtheta = W sum_{x in x_r} dL/dx dx/dtheta, plus the direct term dL_r/dtheta (the
logit scale and bias are not gathered); DDP averages over ranks:
(1/W) sum_r [W sum_{x_r} dL/dx dx/dtheta + dL_r/dtheta] = dL/dtheta, the single-process gradient.
So: embedding grads / W == reference rows; scale and bias grads averaged over ranks == reference;
DDP parameter grads == reference on every rank.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from ctvlp.losses import ClipLoss, SigLipLoss, gather_features
from ctvlp.losses.gather import rank_offset

WORLD, B_LOCAL, DIM, IN_DIM = 2, 3, 4, 5
LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss}


def global_batch() -> dict[str, torch.Tensor]:
    """The same global batch on every process: embeddings (N, DIM), tower inputs (N, IN_DIM)."""
    g = torch.Generator().manual_seed(0)
    n = WORLD * B_LOCAL
    return {"image_emb": F.normalize(torch.randn(n, DIM, generator=g), dim=1),
            "text_emb": F.normalize(torch.randn(n, DIM, generator=g), dim=1),
            "logit_scale": torch.tensor(5.0), "logit_bias": torch.tensor(-2.0),
            "x_img": torch.randn(n, IN_DIM, generator=g), "x_txt": torch.randn(n, IN_DIM, generator=g)}


class TinyTowers(nn.Module):
    """One Linear shared by both modalities, a learnable log scale and (for SigLIP) a bias; DDP needs
    every parameter to get a gradient, so the bias exists only when the loss uses it."""

    def __init__(self, with_bias: bool):
        super().__init__()
        torch.manual_seed(1)
        self.proj = nn.Linear(IN_DIM, DIM)
        self.log_scale = nn.Parameter(torch.tensor(1.5))
        self.bias = nn.Parameter(torch.tensor(-1.0)) if with_bias else None

    def forward(self, x_img: torch.Tensor, x_txt: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"image_emb": F.normalize(self.proj(x_img), dim=1), "text_emb": F.normalize(self.proj(x_txt), dim=1),
               "logit_scale": self.log_scale.exp()}
        return out if self.bias is None else {**out, "logit_bias": self.bias}


def leaves(batch: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    keys = ("image_emb", "text_emb")
    out = {k: batch[k][rows].clone().requires_grad_() for k in keys}
    out.update({k: batch[k].clone().requires_grad_() for k in ("logit_scale", "logit_bias")})
    return out


def run(batch: dict[str, torch.Tensor], rows: slice, gather: bool = True) -> dict[str, torch.Tensor]:
    """Each loss on ``rows`` of the batch: the value and the gradients of its four inputs, and the
    gradients of TinyTowers' parameters (DDP-wrapped when distributed)."""
    out = {}
    for name, loss_cls in LOSSES.items():
        inputs = leaves(batch, rows)
        loss = loss_cls(gather=gather)(**inputs)
        loss.backward()
        out[f"{name}/loss"] = loss.detach()
        out.update({f"{name}/grad/{k}": v.grad for k, v in inputs.items()})
        model = TinyTowers(with_bias=name == "siglip")
        wrapped = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
        loss_cls(gather=gather)(**wrapped(batch["x_img"][rows], batch["x_txt"][rows])).backward()
        out.update({f"{name}/param/{k}": p.grad for k, p in model.named_parameters()})
    return out


def worker(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    batch = global_batch()
    rows = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    result = run(batch, rows)
    result.update({f"local/{k}": v for k, v in run(batch, rows, gather=False).items() if k.endswith("/loss")})
    result["gathered"] = gather_features(batch["image_emb"][rows])
    result["offset"] = torch.tensor(rank_offset(B_LOCAL))
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(str(tmp / "store"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return run(global_batch(), slice(None))


def test_gather_returns_the_global_batch_in_rank_order(ranks):
    batch = global_batch()
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res["gathered"], batch["image_emb"])
        assert res["offset"].item() == r * B_LOCAL


@pytest.mark.parametrize("name", LOSSES)
def test_mean_over_ranks_equals_single_process_loss(ranks, reference, name):
    mean = torch.stack([res[f"{name}/loss"] for res in ranks]).mean()
    torch.testing.assert_close(mean, reference[f"{name}/loss"])
    # Without the gather each rank only sees its own rows, a different loss.
    local = torch.stack([res[f"local/{name}/loss"] for res in ranks]).mean()
    assert not torch.isclose(local, reference[f"{name}/loss"])


@pytest.mark.parametrize("name", LOSSES)
def test_embedding_gradients_over_world_size_equal_single_process_rows(ranks, reference, name):
    for r, res in enumerate(ranks):
        rows = slice(r * B_LOCAL, (r + 1) * B_LOCAL)
        for key in ("image_emb", "text_emb"):
            torch.testing.assert_close(res[f"{name}/grad/{key}"] / WORLD, reference[f"{name}/grad/{key}"][rows])


@pytest.mark.parametrize("name", LOSSES)
def test_scale_and_bias_gradients_averaged_over_ranks_equal_single_process(ranks, reference, name):
    for key in ("logit_scale", "logit_bias") if name == "siglip" else ("logit_scale",):
        mean = torch.stack([res[f"{name}/grad/{key}"] for res in ranks]).mean()
        torch.testing.assert_close(mean, reference[f"{name}/grad/{key}"])


@pytest.mark.parametrize("name", LOSSES)
def test_ddp_parameter_gradients_equal_single_process(ranks, reference, name):
    keys = [k for k in reference if k.startswith(f"{name}/param/")]
    assert len(keys) == (4 if name == "siglip" else 3)  # Linear weight and bias, log scale (, logit bias)
    for res in ranks:
        for key in keys:
            torch.testing.assert_close(res[key], reference[key], rtol=1e-5, atol=1e-6)
