"""What each proxy of bench_proxy_fidelity.py costs in seconds per trial, measured side by side.

The fidelity study's own seconds came from runs that shared the 2 cores with another run and at
times other work, so they only give an order of magnitude. Here one epoch of each proxy that
changes what an epoch costs (image size, width, share of the data) is timed on the same layouts,
one after another in one process on one torch thread, interleaved over ``--repeats`` rounds after
waiting for a quiet machine. A trial's seconds are the median epoch (training and validation) x
its epochs; the epoch-count variations (``long``, ``epochs-8``, ``epochs-2``) are the proxy's
epoch x their epochs. Set-up outside the epochs is under 2 % of a trial
(results/bench_trial_overhead.md) and is left out.

    PYTHONPATH=. python benchmarks/bench_proxy_cost.py
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import before_measuring, load_1m, load_note, timing_arguments, write_result
from benchmarks.bench_proxy_fidelity import CONFIGS, DEFAULT_CONFIG, FULL_CONFIGS, settings

# the settings that change what one epoch costs; the others only change how many epochs
EPOCH_KEYS = ("image_size", "patch_size", "width_scale", "train_per_class", "batch_size")


def epoch_groups() -> dict[tuple, list[str]]:
    """Configurations grouped by what one of their epochs costs: {epoch settings: [configs]}."""
    groups: dict[tuple, list[str]] = {}
    for config in CONFIGS:
        key = tuple(settings(config)[k] for k in EPOCH_KEYS)
        groups.setdefault(key, []).append(config)
    return groups


def timing_layouts(n: int = 3) -> list[str]:
    """The cheapest, the median and the dearest (in MACs) of the fidelity study's layouts."""
    rows = json.loads((Path(__file__).resolve().parent.parent / "results" / "proxy_fidelity-layouts.json").read_text())
    rows.sort(key=lambda r: r["macs"])
    return [rows[round(i * (len(rows) - 1) / (n - 1))]["layout"] for i in range(n)]


def time_epoch(layout: str, config: str, data, folder: Path) -> float:
    """Seconds of one epoch (train and validation) of ``config``'s proxy of ``layout``."""
    from funnelbench.search.study import train_trial

    rec = train_trial(
        layout,
        out=folder / f"{config}-{abs(hash(layout))}-{time.time_ns()}",
        data=data,
        proxy={**settings(config), "epochs": 1, "seed": 0, "threads": 1, "checkpoint": "none"},
    )
    return rec["train_s"]


def main() -> None:
    args, load = timing_arguments(__doc__, repeats=3, warmup=1, quick="one round, no waiting: a smoke run")
    import torch

    import funnelbench as fb

    torch.set_num_threads(1)
    layouts = timing_layouts()
    groups = epoch_groups()
    data = {}
    for key, configs in groups.items():
        s = settings(configs[0])
        data[key] = fb.load_data(None, image_size=s["image_size"], train_per_class=s["train_per_class"])
    times: dict[tuple, list[float]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(args.warmup):
            time_epoch(layouts[0], "proxy", data[next(iter(groups))], folder)
        for round_ in range(args.repeats):
            before = before_measuring(args)
            for layout in layouts:
                for key, configs in groups.items():
                    s = time_epoch(layout, configs[0], data[key], folder)
                    times.setdefault((layout, key), []).append(s)
                    rows.append(
                        {
                            "round": round_,
                            "layout": layout,
                            "epoch_of": configs[0],
                            "epoch_s": round(s, 2),
                            "load_before": before,
                            "load_after": load_1m(),
                        }
                    )
    records = []
    proxy_key = tuple(settings("proxy")[k] for k in EPOCH_KEYS)
    for key, configs in groups.items():
        for config in configs:
            epochs = settings(config)["epochs"]
            per_layout = {lay: statistics.median(times[(lay, key)]) * epochs for lay in layouts}
            proxy = {lay: statistics.median(times[(lay, proxy_key)]) * settings("proxy")["epochs"] for lay in layouts}
            records.append(
                {
                    "proxy": config,
                    "epochs": epochs,
                    "image_px": settings(config)["image_size"],
                    "width_scale": settings(config)["width_scale"],
                    "train_per_class": settings(config)["train_per_class"],
                    **{f"s_per_trial {lay}": round(v, 1) for lay, v in per_layout.items()},
                    "vs_proxy (mean over the layouts)": round(
                        statistics.mean(per_layout[lay] / proxy[lay] for lay in layouts), 2
                    ),
                }
            )
    order = list(CONFIGS)
    records.sort(key=lambda r: order.index(r["proxy"]))
    notes = [
        load_note(load),
        f"Layouts: the cheapest, median and dearest in MACs of the fidelity study's ({'; '.join(layouts)}); "
        f"{args.repeats} interleaved rounds, the median epoch of each; one torch thread, nothing else running.",
        "`s_per_trial` = median epoch x epochs (training on the built-in data and one validation pass per "
        f"epoch); `{DEFAULT_CONFIG}` is the search's default proxy; {', '.join(FULL_CONFIGS)} trained every "
        "layout of the fidelity study.",
        "CPU timings on a shared 2-core machine: ratios measured side by side mean more than the seconds.",
    ]
    write_result("proxy_cost", records, "What each proxy costs per trial, measured side by side", notes, rows=rows)
    print(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
