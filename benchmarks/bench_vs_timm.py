"""Our ``B12`` model against timm's ``VisionTransformer`` at identical widths.

Target (issue 3): training and inference images/s of ours / timm >= 1.0, measured interleaved
in one process on CPU, for DeiT-Ti widths at 224 px and for a small-image configuration
(32 px images, 4 px patches: 64 patches + class token = 65 tokens), fp32 and bf16 autocast.
Both models get the same weights (ours loads timm's state dict; the logits are compared), the
same batch, the same AdamW step and the same timing loop (``funnelbench.measure``).

    PYTHONPATH=. python benchmarks/bench_vs_timm.py            # waits for a quiet machine
    PYTHONPATH=. python benchmarks/bench_vs_timm.py --quick    # smoke run, small batches
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

import funnelbench as fb
from benchmarks._common import before_measuring, load_1m, load_note, machine, timing_arguments, write_result
from funnelbench.measure import InferStep, TrainStep, make_optimizer, time_interleaved

CPU = torch.device("cpu")
CONFIGS = [
    # name, our layout, timm geometry, train batch, inference batch
    ("DeiT-Ti 224 px", "B12(197), h192", dict(img_size=224, patch_size=16), 32, 64),
    ("DeiT-Ti widths, 32 px / 4 px patches", "B12(65), h192, img32, patch4", dict(img_size=32, patch_size=4), 64, 256),
]


def pair(layout: str, geometry: dict):
    timm_model = VisionTransformer(**geometry, embed_dim=192, depth=12, num_heads=3, num_classes=1000)
    ours = fb.build_model(layout)
    fb.load_vit_weights(ours, timm_model.state_dict())
    x = torch.randn(2, 3, geometry["img_size"], geometry["img_size"])
    with torch.no_grad():
        diff = (ours.eval()(x) - timm_model.eval()(x)).abs().max().item()
    return ours, timm_model, diff


def main():
    args, load = timing_arguments(__doc__, repeats=7, warmup=3, quick="a smoke run: batches / 8, 2 repeats, no waiting")
    rows = []
    for name, layout, geometry, train_batch, infer_batch in CONFIGS:
        if args.quick:
            train_batch, infer_batch = max(2, train_batch // 8), max(2, infer_batch // 8)
        ours, ref, diff = pair(layout, geometry)
        size = geometry["img_size"]
        for dtype in ("fp32", "bf16"):
            for mode, batch in (("train", train_batch), ("infer", infer_batch)):
                x = torch.randn(batch, 3, size, size)
                y = torch.randint(0, 1000, (batch,))
                steps = {}
                for who, model in (("ours", ours), ("timm", ref)):
                    if mode == "train":
                        model.train()
                        steps[who] = TrainStep(model, x, y, make_optimizer(model), CPU, dtype)
                    else:
                        model.eval()
                        steps[who] = InferStep(model, x, CPU, dtype)
                load_before = before_measuring(args)
                timings = time_interleaved(steps, CPU, warmup=args.warmup, repeats=args.repeats)
                o, t = (batch / timings[k].median_s for k in ("ours", "timm"))
                rows.append(
                    {
                        "config": name,
                        "layout": layout,
                        "dtype": dtype,
                        "mode": mode,
                        "batch_size": batch,
                        "ours_img_per_s": round(o, 1),
                        "timm_img_per_s": round(t, 1),
                        "ours_over_timm": round(o / t, 3),
                        "ours_range_pct": round(
                            100 * (timings["ours"].max_s - timings["ours"].min_s) / timings["ours"].median_s, 1
                        ),
                        "timm_range_pct": round(
                            100 * (timings["timm"].max_s - timings["timm"].min_s) / timings["timm"].median_s, 1
                        ),
                        "max_abs_logit_diff": float(f"{diff:.2e}"),
                        "load_before": load_before,
                        "load_after": load_1m(),
                    }
                )
                print(rows[-1], flush=True)
    worst = min(r["ours_over_timm"] for r in rows)
    notes = [
        f"Target: ours / timm >= 1.0 in every row; worst ratio {worst:.3f}.",
        f"{args.repeats} timed repeats after {args.warmup} warm-up steps, interleaved ours/timm (A B, B A, A B, ...); "
        "img/s from the median repeat; range = (slowest - fastest) / median.",
        "Same weights in both models (max_abs_logit_diff: fp32 logits of 2 images); train = AdamW step.",
        load_note(load),
    ]
    path = write_result(
        "bench_vs_timm" + ("_quick" if args.quick else ""),
        rows,
        "Ours vs timm VisionTransformer (identical widths, interleaved)",
        notes,
    )
    print(f"worst ours/timm ratio {worst:.3f}; wrote {path}; {machine()}")


if __name__ == "__main__":
    main()
