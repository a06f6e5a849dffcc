"""``funnelbench profile``, ``funnelbench reproduce`` and ``funnelbench memory``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import typer

from ..errors import UsageError
from ..exports import check_export_path, export_records
from ..progress import ProgressBar
from ..tables import MACS_NOTE, MEMORY_NOTE, TIMING_NOTE, human, profile_table, reproduce_table
from ..units import parse_bytes
from ._common import command, console, err_console, make_table, print_json

# Rich table headers of the reproduce columns (the export keeps the column names, with units).
HEADERS = {
    "table": "table",
    "row": "row",
    "paper_mem_saved_pct": "paper mem saved %",
    "mem_saved_pct": "ours",
    "mem_est_saved_pct": "est.",
    "est_mem_saved_pct_at_paper_batch": "est. @ paper mem",
    "paper_speedup_x": "paper speed-up",
    "train_speedup_x": "ours",
    "macs_ratio_x": "MACs ratio",
    "train_peak_mem_mib": "peak MiB",
    "train_steps_per_s": "steps/s",
    "error": "error",
}
TEXT_COLUMNS = {"model", "attention_kernel", "error", "row"}
DTYPE_HELP = "fp32, or bf16/fp16 autocast (weights stay fp32)."
# Options profile and reproduce share.
DEVICE = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda.")
DTYPE = typer.Option("fp32", "--dtype", help=DTYPE_HELP)
RESUME = typer.Option(
    None, "--resume", help="JSON-lines run file: finished rows are appended at once and skipped when run again."
)
EXPORT = typer.Option(None, "--export", help="Write .csv/.json (every field) or .md/.tex (the table).")


def _print_rows(rows: list[dict], title: str | None = None) -> None:
    if not rows:
        return
    cols = list(rows[0])
    table = make_table(
        title,
        [HEADERS.get(c, c) for c in cols],
        [[r[c] for c in cols] for r in rows],
        right={HEADERS.get(c, c) for c in cols if c not in TEXT_COLUMNS},
    )
    console.print(table)


def _export(path: str | None, full: list[dict], compact: list[dict], title: str) -> None:
    """``.csv``/``.json`` get every field of every record, ``.md``/``.tex`` the table as printed."""
    if path:
        chosen = compact if Path(path).suffix.lower() in (".md", ".tex") else full
        export_records(chosen, path, title=title if Path(path).suffix.lower() == ".md" else None)
        err_console.print(f"[dim]wrote {path}[/dim]")


def _progress_callback(bar: ProgressBar):
    def update(done: int, total: int, label: str) -> None:
        bar.update(f"profiling {label}", done, total)
        if not bar.active and label != "done":  # no bar in pipes and files: one line per layout
            err_console.print(f"[{done + 1}/{total}] {label}", highlight=False)

    return update


def _header(records: list[dict]) -> str:
    r = records[0]
    kernels = {x["attention_kernel"] for x in records}
    attention = f", attention {kernels.pop()}" if len(kernels) == 1 else ""
    return (
        f"{r['device']}, {r['dtype']}{attention}, torch {r['torch_version']}, {r['optimizer']}, "
        f"warm-up {r['warmup']} + {r['repeats']} timed repeats"
        + (f", compile={r['compile']}" if r["compile"] != "none" else "")
    )


def _warn_if_busy(records: list[dict]) -> None:
    loads = [r["load_1m"] for r in records if r.get("load_1m") is not None]
    cores = os.cpu_count() or 1
    if loads and max(loads) > 0.75 * cores and records[0]["device"].startswith("cpu"):
        err_console.print(
            f"[yellow]note: the machine was busy (1-minute load up to {max(loads):.1f} on {cores} cores); "
            "timings are noisy, see the ± column[/yellow]"
        )


def _with_spread(value, spread) -> str | None:
    if value is None:
        return None
    return f"{value:,.1f}" + (f" ±{spread:.0f}%" if spread is not None else "")


def _with_estimate(measured, estimate) -> str | None:
    if measured is None and estimate is None:
        return None
    return f"{'-' if measured is None else f'{measured:,.1f}'} ({'-' if estimate is None else f'{estimate:,.1f}'})"


def _terminal_profile(records: list[dict], compact: list[dict]) -> None:
    """The profile table on a terminal: spreads and estimates share a cell with the figure."""
    kernels = {c["attention_kernel"] for c in compact}
    rows = []
    for r, c in zip(records, compact):
        row = {
            "model": c["model"],
            "batch": c["batch_size"],
            "params": human(r["params"]),
            "MACs": human(r["macs"]),
            "train img/s": _with_spread(c["train_img_per_s"], c["train_spread_pct"]),
            "infer img/s": _with_spread(c["infer_img_per_s"], c["infer_spread_pct"]),
            "train peak MiB (est.)": _with_estimate(c["train_peak_mem_mib"], c["train_mem_est_mib"]),
            "infer peak MiB (est.)": _with_estimate(c["infer_peak_mem_mib"], c["infer_mem_est_mib"]),
        }
        if len(kernels) > 1:
            row["attention"] = c["attention_kernel"]
        if "fvcore_gmacs" in c:
            row["fvcore / torch MACs"] = " / ".join(
                human(r[k]) if r.get(k) else "-" for k in ("fvcore_macs", "torch_macs")
            )
        if "train_speedup_x" in c:
            row["speed-up"] = None if c["train_speedup_x"] is None else f"{c['train_speedup_x']:.2f}x"
            row["mem saved % (est.)"] = _with_estimate(c["mem_saved_pct"], c["mem_est_saved_pct"])
            row["MACs saved %"] = c["macs_saved_pct"]
        if "error" in c:
            row["error"] = c["error"]
        rows.append(row)
    cols = list(rows[0])
    console.print(
        make_table(None, cols, [[x[k] for k in cols] for x in rows], right=set(cols) - {"model", "attention", "error"})
    )


@command("profile")
def profile_cmd(
    layouts: list[str] = typer.Argument(..., help='Layouts or preset names, e.g. "B6(197)-6(99)" deit-s.'),
    baseline: str = typer.Option(
        None, "--baseline", "-b", help="Preset or layout every row is compared with (measured in the same run)."
    ),
    device: str = DEVICE,
    dtype: str = DTYPE,
    batch_size: int = typer.Option(8, "--batch-size", help="Images per step (lowered automatically on out-of-memory)."),
    image_size: int = typer.Option(
        None, "--image-size", help="Rebuild every layout at this resolution (token counts follow)."
    ),
    warmup: int = typer.Option(2, "--warmup", help="Untimed steps before timing."),
    repeats: int = typer.Option(5, "--repeats", help="Timed repeats (the median is reported)."),
    train: bool = typer.Option(
        True, "--train/--no-train", help="Measure a training step (forward, backward, optimizer)."
    ),
    infer: bool = typer.Option(True, "--infer/--no-infer", help="Measure inference."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak memory."),
    counters: bool = typer.Option(
        False, "--counters", help="Cross-check MACs with fvcore and torch's FlopCounterMode."
    ),
    compile_mode: str = typer.Option(
        None, "--compile", help="torch.compile mode: default, reduce-overhead or max-autotune."
    ),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or sgd (momentum 0.9)."),
    num_classes: int = typer.Option(1000, "--num-classes", help="Classes of the head."),
    resume: str = RESUME,
    json_out: bool = typer.Option(False, "--json", help="Print the records as JSON on stdout."),
    export: str = EXPORT,
):
    """Measure params, MACs, training and inference throughput and peak memory of layouts.

    MACs are multiply-accumulates of one image's forward pass (the papers' "FLOPs");
    FLOPs = 2 x MACs. Peak memory is of one training step (forward, backward, AdamW step) and
    of one inference pass, next to the analytic estimate.
    """
    from ..profiling import profile

    if export:
        check_export_path(export)
    with ProgressBar(err_console) as bar:
        records = profile(
            layouts,
            baseline=baseline,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            image_size=image_size,
            warmup=warmup,
            repeats=repeats,
            train=train,
            infer=infer,
            memory=memory,
            counters=counters,
            compile=compile_mode,
            optimizer=optimizer,
            num_classes=num_classes,
            resume=resume,
            progress=_progress_callback(bar),
        )
    compact = profile_table(records)
    if json_out:
        print_json(records)
    else:
        console.print(f"[dim]{_header(records)}[/dim]")
        _terminal_profile(records, compact)
        notes = [
            MACS_NOTE + ".",
            MEMORY_NOTE + ".",
            "est. = analytic estimate (funnelbench.memory). " + TIMING_NOTE + ".",
        ]
        if baseline:
            notes.append(
                f"speed-up = training img/s over {records[0]['baseline']} (= steps/s at the same batch); "
                "saved % = 1 - ours / baseline."
            )
        for r in records:
            for note in ("ratio_note", "mem_est_note"):
                if r.get(note):
                    notes.append(f"{r['name']}: {r[note]}")
        console.print("[dim]" + "\n".join(notes) + "[/dim]")
        _warn_if_busy(records)
    _export(export, records, compact, f"funnelbench profile\n\n{_header(records)}")


@command("reproduce")
def reproduce_cmd(
    paper: str = typer.Argument("funnel-vit", help="The paper whose tables to reproduce (funnel-vit)."),
    tables: str = typer.Option("2,4", "--tables", help="Comma-separated table numbers (funnel-vit: 2, 3, 4)."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    batch_size: int = typer.Option(
        8, "--batch-size", help="Images per step (ViT-B at 224 px: a few seconds per step on a 2-core CPU)."
    ),
    warmup: int = typer.Option(1, "--warmup", help="Untimed steps before timing."),
    repeats: int = typer.Option(3, "--repeats", help="Timed repeats (the median is reported)."),
    infer: bool = typer.Option(
        False, "--infer/--no-infer", help="Also measure inference (the paper reports training only)."
    ),
    resume: str = RESUME,
    json_out: bool = typer.Option(False, "--json", help="Print the rows as JSON on stdout."),
    export: str = EXPORT,
):
    """Profile the layouts of a seed paper's tables and print its memory and speed ratios next to ours.

    The paper's numbers ship with funnelbench. Ratios are against each table's baseline row
    (B12(197) for Tables 2 and 4), measured in the same run on this machine.
    """
    from ..papers import reproduce

    if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", tables or ""):
        raise UsageError(f"--tables {tables!r}: give table numbers separated by commas, e.g. 2,4")
    if export:
        check_export_path(export)
    with ProgressBar(err_console) as bar:
        rows = reproduce(
            paper,
            [int(t) for t in tables.split(",")],
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            warmup=warmup,
            repeats=repeats,
            infer=infer,
            resume=resume,
            progress=_progress_callback(bar),
        )
    compact = reproduce_table(rows)
    if json_out:
        print_json(rows)
    else:
        r = rows[0]
        console.print(
            f"[dim]{paper}: batch {r['batch_size']}, {r['device']}, {r['dtype']}, torch {r['torch_version']}, "
            f"{r['repeats']} timed repeats[/dim]"
        )
        _print_rows(compact)
        console.print(
            "[dim]saved % = 1 - memory / the table's baseline; speed-up = training img/s over the baseline "
            "(= steps/s at the same batch); "
            "MACs ratio = baseline MACs / ours (the speed-up MACs alone predict).\n"
            "est. saved % @ paper mem: the analytic estimate (fp32, CUDA) at the batch where the baseline "
            f"needs the paper's memory ({rows[0].get('est_batch_at_paper_mem')} images for the first table).\n"
            + MEMORY_NOTE
            + ".[/dim]"
        )
    r = rows[0]
    _export(
        export,
        rows,
        compact,
        f"funnelbench reproduce {paper}\n\nbatch {r['batch_size']}, {r['device']}, {r['dtype']}, "
        f"attention {r['attention_kernel']}, torch {r['torch_version']}, {r['repeats']} timed repeats",
    )


@command("memory")
def memory_cmd(
    layouts: list[str] = typer.Argument(..., help="Layouts or preset names."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per step."),
    device: str = typer.Option(
        "cpu",
        "--device",
        help="cpu or cuda: whose implementation details to assume (no GPU "
        "needed). cpu, as in fb.estimate_memory: those rules are checked against measured "
        "peaks; the cuda rules (AdamW, autocast LayerNorm) are derived, not yet checked on a GPU.",
    ),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
    attention: str = typer.Option(
        "fused", "--attention", help="fused (flash/efficient/cuDNN, the default kernels) or math."
    ),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or sgd (momentum 0.9)."),
    budget: str = typer.Option(
        None, "--budget", help="Memory of a device, e.g. 24GiB: prints the largest batch that fits."
    ),
    num_classes: int = typer.Option(1000, "--num-classes", help="Classes of the head."),
    json_out: bool = typer.Option(False, "--json", help="Print the estimates as JSON."),
):
    """Analytic memory of a training step and of inference, without building the model.

    Weights, gradients, optimizer state, input batch and saved activations, with the peak of a
    training step (end of forward, worst moment of backward, or optimizer step).
    """
    from ..memory import memory_records

    budget_bytes = parse_bytes(budget, "--budget") if budget is not None else None
    rows = memory_records(
        layouts,
        batch_size,
        budget_bytes=budget_bytes,
        dtype=dtype,
        device=device,
        attention=attention,
        optimizer=optimizer,
        num_classes=num_classes,
    )
    if json_out:
        print_json(rows)
        return
    cols = ["model", "weights MiB", "optimizer MiB", "activations MiB", "train peak MiB", "peak in", "infer peak MiB"]
    if budget_bytes is not None:
        cols.append(f"max batch in {budget}")
    table_rows = []
    for r in rows:
        if "error" in r:
            table_rows.append([r["model"]] + ["not modelled"] + ["-"] * (len(cols) - 2))
            continue
        row = [r["model"]] + [
            f"{r[k] / 2**20:.1f}" for k in ("weights_bytes", "optimizer_bytes", "activations_bytes", "train_peak_bytes")
        ]
        row += [r["train_peak_phase"], f"{r['infer_peak_bytes'] / 2**20:.1f}"]
        if budget_bytes is not None:
            row.append(r["max_batch_size"])
        table_rows.append(row)
    rules = "cuda rules (derived, not yet checked on a GPU)" if device.startswith("cuda") else f"{device} rules"
    console.print(f"[dim]batch {batch_size}, {dtype}, {rules}, {attention} attention, {optimizer}[/dim]")
    console.print(make_table(None, cols, table_rows, right=set(cols) - {"model", "peak in"}))
    console.print(
        "[dim]Analytic estimate (funnelbench.memory): activations = saved for backward at the end of the "
        "forward pass; not counted: the CUDA context, allocator rounding, kernel scratch.[/dim]"
    )
    for r in rows:
        if "error" in r:
            console.print(f"[yellow]{r['model']}: {r['error']}[/yellow]")
