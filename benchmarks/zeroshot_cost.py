"""Zero-shot cost benchmark: classifying N volumes for 18 labels vs encoding the N volumes once.

    python benchmarks/zeroshot_cost.py [--n 256] [--repeats 3]

ctvlp encodes each volume once and each prompt once, then scores every (volume, label) pair with
one matmul (``ctvlp.models.prompting.zero_shot_scores``); CT-CLIP's evaluation re-encodes the volume for
every label. Three timings on the demo recipe's model (random weights, the packaged MiniLM text
tower) and N random volumes of the demo's evaluation shape (16 x 32 x 40), batch 32:

* ``encode``: encode the N volumes once (the floor);
* ``zero_shot``: encode the N volumes, encode the 36 CT-CLIP prompts of the 18 CT-RATE labels, score;
* ``per_label``: the re-encoding scheme (volumes encoded once per label), timed on N / 8 volumes and
  scaled by 8 (it is linear in N).

Goal: zero_shot / encode <= 1.2. Results: benchmarks/results/zeroshot_cost-<date>.json.
"""

from __future__ import annotations

import argparse

import torch

from machine import median_seconds, save_result

from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.prompts import build_prompts
from ctvlp.models.prompting import encode_texts, zero_shot_scores
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.recipes import get_recipe

@torch.no_grad()
def encode(model: VisionLanguageModel, volumes: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([model.encode_image(volumes[i:i + batch]) for i in range(0, len(volumes), batch)])


@torch.no_grad()
def zero_shot(model: VisionLanguageModel, volumes: torch.Tensor, batch: int) -> torch.Tensor:
    image = encode(model, volumes, batch)
    texts, index = build_prompts(list(CTRATE_LABELS), "ctclip")
    pos, neg = index.pool(encode_texts(model, texts))
    return zero_shot_scores(image, pos, neg, model.scale())


@torch.no_grad()
def per_label(model: VisionLanguageModel, volumes: torch.Tensor, batch: int) -> torch.Tensor:
    texts, index = build_prompts(list(CTRATE_LABELS), "ctclip")
    pos, neg = index.pool(encode_texts(model, texts))
    columns = [zero_shot_scores(encode(model, volumes, batch), pos[l:l + 1], neg[l:l + 1], model.scale())
               for l in range(len(CTRATE_LABELS))]
    return torch.cat(columns, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = get_recipe("demo")
    model = VisionLanguageModel(cfg.model).eval()
    d, (h, w), batch = cfg.data.sampler.chunk_depth, cfg.eval.sampler.size, cfg.eval.batch_size
    volumes = torch.randn(args.n, 1, d, h, w, generator=torch.Generator().manual_seed(0))
    zero_shot(model, volumes[:batch], batch)  # warm-up: loads the text tower's kernels
    t_encode = median_seconds(lambda: encode(model, volumes, batch), args.repeats)
    t_zero_shot = median_seconds(lambda: zero_shot(model, volumes, batch), args.repeats)
    small = volumes[: max(batch, args.n // 8)]
    t_per_label = median_seconds(lambda: per_label(model, small, batch), 1) * len(volumes) / len(small)
    row = {"n": args.n, "labels": len(CTRATE_LABELS), "encode_seconds": t_encode,
           "zero_shot_seconds": t_zero_shot, "per_label_seconds_extrapolated": t_per_label,
           "zero_shot_over_encode": t_zero_shot / t_encode, "per_label_over_encode": t_per_label / t_encode}
    print(f"N={args.n} volumes, {len(CTRATE_LABELS)} labels: encode once {t_encode:.2f} s, zero-shot "
          f"{t_zero_shot:.2f} s ({row['zero_shot_over_encode']:.3f}x, goal <= 1.2x); re-encoding per label "
          f"~{t_per_label:.1f} s ({row['per_label_over_encode']:.1f}x)")
    save_result("zeroshot_cost", {"goal": 1.2, **row})


if __name__ == "__main__":
    main()
