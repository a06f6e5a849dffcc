"""Is the input pipeline the bottleneck? The trainer's images/s against a bare train step.

For each model and dtype, in one process and interleaved round by round:

* trainer: ``Trainer.train_epoch`` on cached built-in data, i.e. everything a real run does per
  step (uint8 gather from the on-disk cache, random-crop augmentation, normalisation, autocast,
  label-smoothed loss, gradient clipping, AdamW, LR schedule, NaN check);
* profiler: the training step ``funnelbench profile`` times (``funnelbench.measure.TrainStep``
  with ``make_optimizer``: torch's default AdamW, a batch already in memory, same model,
  autocast dtype and batch size);
* bare step: the same step with the trainer's fused AdamW kernel, the fastest a step on an
  in-memory batch gets (a stricter reference than the profiler).

The target is trainer / profiler >= 0.9: the median over rounds of each round's ratio (the three
parts of a round run back to back, so a burst of load from elsewhere hits all alike).

    python benchmarks/bench_trainer.py --out results/bench_trainer.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import funnelbench as fb
from benchmarks._common import load_average, markdown_table, write_result
from funnelbench.measure import TrainStep, make_optimizer
from funnelbench.train import TrainConfig, Trainer, proxy_layout

# (layout, image size, patch size, batch size, steps per round)
CASES = [
    ("B4(17), h96, a3, img32, patch8", 32, 8, 128, 20),  # tiny: the pipeline's share is largest
    ("B6(197)-6(99), h192", 56, 4, 64, 3),  # DeiT-Ti-width Funnel-ViT at proxy resolution (14 x 14 grid)
]


def reference_step_fns(layout, batch_size: int, dtype: str, num_classes: int) -> dict:
    """Training steps on an in-memory batch: the profiler's own (``funnelbench.measure``) and a
    bare one with the trainer's fused AdamW."""
    size = layout.image_size
    cpu = torch.device("cpu")
    steps = {}
    for name in ("profiler", "bare"):
        torch.manual_seed(0)
        model = fb.build_model(layout, num_classes=num_classes).train()
        x = torch.randn(batch_size, 3, size, size)
        y = torch.randint(0, num_classes, (batch_size,))
        if name == "profiler":
            optimizer = make_optimizer(model, "adamw")
        else:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # the trainer's AdamW kernel
        steps[name] = TrainStep(model, x, y, optimizer, cpu, dtype)
    return steps


def run_case(layout_text, image_size, patch_size, batch_size, steps, dtype, rounds, cache_dir, out_dir):
    layout = proxy_layout(layout_text, image_size, patch_size)
    per_class = steps * batch_size // 8  # the built-in data has 8 classes: one epoch = `steps` steps
    config = TrainConfig(
        layout=layout_text,
        image_size=image_size,
        patch_size=patch_size,
        batch_size=batch_size,
        train_per_class=per_class,
        val_per_class=1,
        epochs=rounds + 1,
        dtype=dtype,
        device="cpu",
    )
    trainer = Trainer(
        config, out=os.path.join(out_dir, f"{dtype}-{image_size}-{batch_size}"), cache_dir=cache_dir, overwrite=True
    )
    assert trainer.steps_per_epoch == steps
    references = reference_step_fns(layout, batch_size, dtype, trainer.data.num_classes)

    def img_per_s(step):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch_size / (time.perf_counter() - start)

    trainer.train_epoch(0)  # warm-up, every side
    for step in references.values():
        img_per_s(step)
    rows = []
    for r in range(rounds):
        row = {"round": r + 1, "trainer_img_per_s": trainer.train_epoch(r + 1)["train_img_per_s"]}
        row.update({f"{name}_img_per_s": img_per_s(step) for name, step in references.items()})
        rows.append(row)
        print(
            f"  {dtype} round {r + 1}: trainer {row['trainer_img_per_s']:8.1f} img/s  profiler "
            f"{row['profiler_img_per_s']:8.1f} img/s  bare {row['bare_img_per_s']:8.1f} img/s",
            flush=True,
        )

    def median(key):
        return round(statistics.median(r[key] for r in rows), 1)

    ratios = [r["trainer_img_per_s"] / r["profiler_img_per_s"] for r in rows]
    bare = [r["trainer_img_per_s"] / r["bare_img_per_s"] for r in rows]
    return {
        "layout": str(layout),
        "image_size": image_size,
        "patch_size": patch_size,
        "batch_size": batch_size,
        "dtype": dtype,
        "steps_per_round": steps,
        "rounds": rounds,
        "trainer_img_per_s": median("trainer_img_per_s"),
        "profiler_img_per_s": median("profiler_img_per_s"),
        "bare_img_per_s": median("bare_img_per_s"),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "target_met": statistics.median(ratios) >= 0.9,
        "ratio_to_bare": round(statistics.median(bare), 3),
    }, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--cases", type=int, nargs="+", default=list(range(len(CASES))), help="indices into CASES (default: all)"
    )
    parser.add_argument("--out", default=None, help="markdown file for the summary (a .csv of rounds goes next to it)")
    args = parser.parse_args(argv)

    load_before = load_average()
    summary, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in args.cases:
            layout, size, patch, batch, steps = CASES[i]
            for dtype in args.dtypes:
                print(f"{layout} at {size} px / {patch} px patches, batch {batch}, {dtype}", flush=True)
                row, rounds = run_case(
                    layout,
                    size,
                    patch,
                    batch,
                    steps,
                    dtype,
                    args.rounds,
                    os.path.join(tmp, "cache"),
                    os.path.join(tmp, "runs"),
                )
                summary.append(row)
                raw += [{"layout": row["layout"], "dtype": dtype, **r} for r in rounds]

    if args.out:
        out = Path(args.out)
        write_result(
            out.stem,
            summary,
            "Trainer vs the profiler's train step (images/s, CPU)",
            [
                "Trainer, profiler step and bare step interleaved round by round in one process; img/s columns are medians "
                "over rounds, `ratio` is the median of the per-round ratios (min and max beside it). Trainer: "
                "`Trainer.train_epoch` on cached built-in data (gather, crop augmentation, normalise, label "
                "smoothing, clipping, fused AdamW, schedule). Profiler: the step `funnelbench profile` times "
                "(funnelbench.measure.TrainStep, torch's default AdamW, in-memory batch); `ratio` = trainer / "
                "profiler, target >= 0.9. Bare: the same step with the trainer's fused AdamW; `ratio_to_bare` = "
                "trainer / bare (a stricter reference)."
            ],
            rows=raw,
            rows_suffix="_rounds",
            load_before=load_before,
            folder=out.parent,
            argv=argv,
        )
    table = markdown_table(summary)
    print(table)
    return summary


if __name__ == "__main__":
    main()
