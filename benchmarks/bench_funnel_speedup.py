"""Do funnel layouts turn saved MACs into training speed?

Target (issue 3): for B6(197)-6(99) and B4(197)-4(99)-4(50) at DeiT-Ti and ViT-B widths, the
measured training speed-up over B12(197) is at least 0.9 x the MACs ratio (B12's MACs / ours),
measured interleaved in one process (``funnelbench.measure.time_interleaved``), fp32, CPU.

    PYTHONPATH=. python benchmarks/bench_funnel_speedup.py            # waits for a quiet machine
    PYTHONPATH=. python benchmarks/bench_funnel_speedup.py --quick    # smoke run
"""

from __future__ import annotations

import torch

import funnelbench as fb
from benchmarks._common import before_measuring, load_1m, load_note, machine, timing_arguments, write_result
from funnelbench.measure import InferStep, TrainStep, make_optimizer, time_interleaved

CPU = torch.device("cpu")
LAYOUTS = ["B12(197)", "B6(197)-6(99)", "B4(197)-4(99)-4(50)"]
WIDTHS = [("DeiT-Ti", ", h192", 32), ("ViT-B", "", 8)]  # name, layout suffix, training batch


def main():
    args, load = timing_arguments(__doc__, repeats=5, warmup=2, quick="a smoke run: batch 2, 2 repeats, no waiting")
    rows = []
    for width, suffix, batch in WIDTHS:
        batch = 2 if args.quick else batch
        layouts = [str(fb.parse_layout(text + suffix)) for text in LAYOUTS]
        x = torch.randn(batch, 3, 224, 224)
        y = torch.randint(0, 1000, (batch,))
        train, infer = {}, {}
        for layout in layouts:
            torch.manual_seed(0)
            model = fb.build_model(layout)
            train[layout] = TrainStep(model, x, y, make_optimizer(model), CPU, "fp32")
            infer_model = fb.build_model(layout).eval()
            infer[layout] = InferStep(infer_model, x, CPU, "fp32")
        load_before = before_measuring(args)
        t_train = time_interleaved(train, CPU, warmup=args.warmup, repeats=args.repeats)
        t_infer = time_interleaved(infer, CPU, warmup=args.warmup, repeats=args.repeats)
        load_after = load_1m()
        base = layouts[0]
        for layout in layouts:
            macs_ratio = fb.count(base).macs / fb.count(layout).macs
            speedup = t_train[base].median_s / t_train[layout].median_s
            rows.append(
                {
                    "width": width,
                    "layout": layout,
                    "batch_size": batch,
                    "gmacs": round(fb.count(layout).macs / 1e9, 3),
                    "macs_ratio_x": round(macs_ratio, 3),
                    "train_step_ms": round(1000 * t_train[layout].median_s, 1),
                    "train_speedup_x": round(speedup, 3),
                    "speedup_over_macs_ratio": round(speedup / macs_ratio, 3),
                    "infer_speedup_x": round(t_infer[base].median_s / t_infer[layout].median_s, 3),
                    "train_range_pct": round(
                        100 * (t_train[layout].max_s - t_train[layout].min_s) / t_train[layout].median_s, 1
                    ),
                    "load_before": load_before,
                    "load_after": load_after,
                }
            )
            print(rows[-1], flush=True)
    funnels = [r for r in rows if r["macs_ratio_x"] > 1]
    worst = min(r["speedup_over_macs_ratio"] for r in funnels)
    notes = [
        f"Target: train_speedup_x >= 0.9 x macs_ratio_x for every funnel row; worst speedup / MACs ratio {worst:.3f}.",
        f"{args.repeats} timed repeats after {args.warmup} warm-up steps, the three layouts of a width interleaved; "
        "training step = forward, backward, AdamW; speed-ups from median step times; inference batch = training batch.",
        load_note(load),
    ]
    path = write_result(
        "bench_funnel_speedup" + ("_quick" if args.quick else ""),
        rows,
        "Funnel speed-up over B12(197) against the MACs ratio",
        notes,
    )
    print(f"worst speedup / MACs ratio {worst:.3f}; wrote {path}; {machine()}")


if __name__ == "__main__":
    main()
