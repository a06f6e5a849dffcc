"""Is the input pipeline the bottleneck? The trainer's images/s against a bare train step.

For each model and dtype, in one process and interleaved round by round:

* trainer: ``Trainer.train_epoch`` on cached built-in data, i.e. everything a real run does per
  step (uint8 gather from the on-disk cache, random-crop augmentation, normalisation, autocast,
  label-smoothed loss, gradient clipping, AdamW, LR schedule, NaN check);
* reference: the minimal train step on a batch already in memory (same model, fused AdamW,
  autocast, batch size): zero_grad, forward, cross-entropy, backward, step.

The target is trainer / reference >= 0.9: the median over rounds of each round's ratio (the two
halves of a round run back to back, so a burst of load from elsewhere hits both alike). The reference stands in for the
profiler's training throughput (``funnelbench.measure``), measured the same way.

    python benchmarks/bench_trainer.py --out results/bench_trainer.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import funnelbench as fb
from funnelbench.env import environment, resolve_dtype
from funnelbench.io import atomic_write, export_records
from funnelbench.train import TrainConfig, Trainer, proxy_layout

# (layout, image size, patch size, batch size, steps per round)
CASES = [
    ("B4(17), h96, a3, img32, patch8", 32, 8, 128, 20),  # tiny: the pipeline's share is largest
    ("B6(197)-6(99), h192", 56, 4, 64, 3),  # DeiT-Ti-width Funnel-ViT at proxy resolution (14 x 14 grid)
]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages ('' where /proc/loadavg does not exist)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return ""


def write_results(out, title: str, script: str, argv, load_before: str, summary: list[dict], rows: list[dict],
                  rows_suffix: str, description: str) -> str:
    """The summary as a markdown table; with ``out``, also a results file that says how it was
    made (command, date, machine, load before and after) and a CSV of ``rows`` next to it."""
    import pandas as pd

    table = pd.DataFrame(summary).to_markdown(index=False)
    if out:
        env = environment(torch.device("cpu"), "")
        command = f"python benchmarks/{os.path.basename(script)} " + " ".join(sys.argv[1:] if argv is None else argv)
        text = (f"# {title}\n\n"
                f"Command: `{command}`  \n"
                f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}  \n"
                f"Machine: {env['device']}, torch {env['torch_version']}  \n"
                f"Load average (1/5/15 min) before: {load_before}, after: {load_average()}\n\n"
                f"{description}\n\n{table}\n")
        atomic_write(out, text)
        export_records(rows, os.path.splitext(out)[0] + rows_suffix + ".csv")
    return table


def reference_step_fn(layout, batch_size: int, dtype: str, num_classes: int):
    """A bare training step on an in-memory batch. When ``funnelbench.measure`` lands, its
    training throughput for the same (model, batch size, dtype) replaces this."""
    torch.manual_seed(0)
    model = fb.build_model(layout, num_classes=num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # the trainer's AdamW kernel
    size = layout.image_size
    x = torch.randn(batch_size, 3, size, size)
    y = torch.randint(0, num_classes, (batch_size,))
    autocast = torch.autocast("cpu", dtype=resolve_dtype(dtype), enabled=dtype != "fp32")
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def run_case(layout_text, image_size, patch_size, batch_size, steps, dtype, rounds, cache_dir, out_dir):
    layout = proxy_layout(layout_text, image_size, patch_size)
    per_class = steps * batch_size // 8  # the built-in data has 8 classes: one epoch = `steps` steps
    config = TrainConfig(layout=layout_text, image_size=image_size, patch_size=patch_size, batch_size=batch_size,
                         train_per_class=per_class, val_per_class=1, epochs=rounds + 1, dtype=dtype, device="cpu")
    trainer = Trainer(config, out=os.path.join(out_dir, f"{dtype}-{image_size}-{batch_size}"), cache_dir=cache_dir,
                      overwrite=True)
    assert trainer.steps_per_epoch == steps
    step = reference_step_fn(layout, batch_size, dtype, trainer.data.num_classes)

    def reference():
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch_size / (time.perf_counter() - start)

    trainer.train_epoch(0)  # warm-up, both sides
    reference()
    rows = []
    for r in range(rounds):
        ours = trainer.train_epoch(r + 1)["train_img_per_s"]
        ref = reference()
        rows.append({"round": r + 1, "trainer_img_per_s": ours, "reference_img_per_s": ref})
        print(f"  {dtype} round {r + 1}: trainer {ours:8.1f} img/s  reference {ref:8.1f} img/s  ratio {ours / ref:.3f}",
              flush=True)
    med_ours = statistics.median(r["trainer_img_per_s"] for r in rows)
    med_ref = statistics.median(r["reference_img_per_s"] for r in rows)
    ratios = [r["trainer_img_per_s"] / r["reference_img_per_s"] for r in rows]
    return {
        "layout": str(layout), "image_size": image_size, "patch_size": patch_size, "batch_size": batch_size,
        "dtype": dtype, "steps_per_round": steps, "rounds": rounds,
        "trainer_img_per_s": round(med_ours, 1), "reference_img_per_s": round(med_ref, 1),
        "ratio": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3), "target_met": statistics.median(ratios) >= 0.9,
    }, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", type=int, nargs="+", default=list(range(len(CASES))),
                        help="indices into CASES (default: all)")
    parser.add_argument("--out", default=None, help="markdown file for the summary (a .csv of rounds goes next to it)")
    args = parser.parse_args(argv)

    load_before = load_average()
    summary, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in args.cases:
            layout, size, patch, batch, steps = CASES[i]
            for dtype in args.dtypes:
                print(f"{layout} at {size} px / {patch} px patches, batch {batch}, {dtype}", flush=True)
                row, rounds = run_case(layout, size, patch, batch, steps, dtype, args.rounds,
                                       os.path.join(tmp, "cache"), os.path.join(tmp, "runs"))
                summary.append(row)
                raw += [{"layout": row["layout"], "dtype": dtype, **r} for r in rounds]

    table = write_results(args.out, "Trainer vs bare train step (images/s, CPU)", __file__, argv, load_before, summary,
                          raw, "_rounds",
                          "Trainer and reference interleaved round by round in one process; img/s columns are medians "
                          "over rounds, `ratio` is the median of the per-round ratios (min and max beside it). Trainer: "
                          "`Trainer.train_epoch` on cached built-in data (gather, crop augmentation, normalise, label "
                          "smoothing, clipping, AdamW, schedule). Reference: zero_grad/forward/loss/backward/AdamW (fused, "
                          "as the trainer's) step on an in-memory batch. Target: ratio >= 0.9.")
    print(table)
    return summary


if __name__ == "__main__":
    main()
