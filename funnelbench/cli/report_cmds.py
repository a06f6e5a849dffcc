"""``funnelbench report``: a thin layer over :mod:`funnelbench.search.report`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from ..errors import UsageError, redact
from ..exports import check_export_path, export_records
from ..search.vocabulary import DEFAULT_OUT_DIR
from ..tables import MACS_NOTE
from ._common import command, console, make_table, print_json

# Messages about files go to stderr, so that --json output on stdout stays parseable.
log = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
TEXT_COLUMNS = {"target_layout", "baseline", "status", "over_budget", "error"}
# Terminal headers of the compact columns (the exports keep the column names, with units).
HEADERS = {
    "trial": "#",
    "target_layout": "target layout",
    "baseline": "baseline",
    "params_m": "params M",
    "gmacs": "GMACs",
    "top1": "top-1 %",
    "top5": "top-5 %",
    "test_top1": "test top-1 %",
    "val_loss": "val loss",
    "train_img_per_s": "train img/s",
    "train_mem_est_mib": "train mem est. MiB",
    "epochs_done": "epochs",
    "status": "status",
    "over_budget": "over budget",
    "error": "error",
}


def _print_table(title: str, rows: list[dict]) -> None:
    cols = list(rows[0])
    console.print(
        make_table(
            title,
            [HEADERS.get(c, c) for c in cols],
            [[r[c] for c in cols] for r in rows],
            right={HEADERS.get(c, c) for c in cols if c not in TEXT_COLUMNS},
        )
    )


def _export(path: str | None, records: list[dict], title: str) -> None:
    """``.csv``/``.json`` get every field of every record, ``.md``/``.tex`` the table as printed."""
    from ..search.report import trial_table

    if path:
        compact = Path(path).suffix.lower() in (".md", ".tex")
        export_records(
            trial_table(records) if compact else records,
            path,
            title=title if Path(path).suffix.lower() == ".md" else None,
        )
        log.print(f"[dim]wrote {path}[/dim]")


def default_storage(study: str, out_dir: str) -> str:
    """The storage of ``study`` when --storage is not given: the search's own rule
    (:func:`funnelbench.search.readonly.default_storage`), imported when a report runs (the
    reader loads Optuna). Looked up here at call time, so a test can replace it."""
    from ..search.readonly import default_storage as rule

    return rule(study, out_dir)


def _header(rep: dict) -> str:
    from ..search.records import budget_text

    s = rep["settings"]
    objectives = ", ".join(f"{o} ({d})" for o, d in zip(rep["objectives"], rep["directions"]))
    proxy = s.get("proxy") or {}
    proxy_text = ", ".join(
        f"{k} {v}"
        for k, v in proxy.items()
        if k in ("epochs", "image_size", "patch_size", "width_scale") and v is not None
    )
    return (
        f"study {rep['study']} in {rep['storage']}\n"
        f"space {s.get('space')}, objectives {objectives}, budget {budget_text(s.get('budgets') or {})}\n"
        f"sampler {s.get('sampler')} seed {s.get('seed')}, pruner {s.get('pruner')}"
        + (f", proxy {proxy_text}" if proxy_text else "")
    )


@command("report")
def report_cmd(
    study: str = typer.Option(..., "--study", help="The study's name (as given to funnelbench search)."),
    storage: str = typer.Option(
        None,
        "--storage",
        help="Optuna storage URL (sqlite:///..., postgresql://...) or the "
        "path of a study.db or journal.log. Default: OUT_DIR/STUDY/study.db or journal.log.",
    ),
    out_dir: str = typer.Option(DEFAULT_OUT_DIR, "--out-dir", help="Folder of the studies, each in OUT_DIR/STUDY/."),
    top: int = typer.Option(20, "--top", min=0, help="Show the K best trials (0 = all). Exports hold every trial."),
    export: str = typer.Option(
        None, "--export", help="Write every trial: .csv/.json (every field) or .md/.tex (the table)."
    ),
    front: str = typer.Option(
        None, "--front", help="Write the best trial or the Pareto front alone (.csv/.json/.md/.tex)."
    ),
    plot: str = typer.Option(
        None,
        "--plot",
        help="Trade-off plot (.png/.pdf/.svg): top-1 against MACs, or the "
        "study's two objectives; pruned and over-budget trials grey, baselines labelled, "
        "the front and the budget drawn.",
    ),
    history: str = typer.Option(None, "--history", help="Best so far against trial number (.png/.pdf/.svg)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
):
    """Trials, the best trial or Pareto front, counts by state and parameter importances of a search study.

    Sorted by the first objective; only reads the storage, so it works while workers are still
    writing (running trials show as running). MACs = multiply-accumulates, what the seed papers
    call "FLOPs"; FLOPs = 2 x MACs. top-1 and top-5 are the proxy's validation accuracy in %.
    """
    from ..search.report import (
        build_report,
        check_figure_path,
        counts_line,
        plot_history,
        plot_tradeoff,
        read_study,
        trial_table,
    )

    for path in (export, front):
        if path:
            check_export_path(path)
    for path in (plot, history):
        if path:
            check_figure_path(path)
    url = storage or default_storage(study, out_dir)
    rep = build_report(read_study(study, url), storage=redact(url))
    if (plot or history) and not any(r["status"] == "completed" for r in rep["trials"]):
        raise UsageError(
            f"cannot plot: no trial of study {study!r} has been trained yet; leave out --plot and --history"
        )
    shown = rep["trials"][:top] if top else rep["trials"]
    if json_out:
        print_json({**rep, "trials": shown})
    else:
        console.print(f"[dim]{_header(rep)}[/dim]")
        console.print(counts_line(rep["counts"]))
        title = f"trials, best first by {rep['objectives'][0]}" + (
            f" (top {len(shown)} of {len(rep['trials'])})" if len(shown) < len(rep["trials"]) else ""
        )
        _print_table(title, trial_table(shown))
        if rep["front"]:
            _print_table(
                "best trial (within budget)" if len(rep["objectives"]) == 1 else "Pareto front (within budget)",
                trial_table(rep["front"]),
            )
        else:
            console.print("no trial within budget has been trained to the end yet")
        for f in rep["counts"]["failures"]:
            console.print(f"[yellow]failed: {f['trials']} x {f['status']}: {f['error'] or '(no message)'}[/yellow]")
        if rep["importances"]:
            console.print(
                make_table(
                    "which decisions mattered (PED-ANOVA)",
                    ["objective", "parameter", "importance"],
                    [[r["objective"], r["param"], f"{r['importance']:.3f}"] for r in rep["importances"]],
                    right={"importance"},
                )
            )
        elif rep["importances_note"]:
            console.print(f"[dim]importances: {rep['importances_note']}[/dim]")
        # one footnote: the importances line only under an importance table (the note above says why there is none)
        console.print(
            f"[dim]{MACS_NOTE}.\ntop-1/top-5: best proxy validation accuracy over the epochs run, in %. "
            "Within budget: every constraint <= 0 (a baseline over budget is trained, never best).\n"
            + ("Importances: over the trials trained to the end. " if rep["importances"] else "")
            + f"Browse the study: optuna-dashboard {rep['storage']}[/dim]"
        )
    _export(export, rep["trials"], f"funnelbench report --study {study}\n\n{counts_line(rep['counts'])}")
    _export(
        front,
        rep["front"],
        f"funnelbench report --study {study}: " + ("best trial" if len(rep["objectives"]) == 1 else "Pareto front"),
    )
    for path, draw in ((plot, plot_tradeoff), (history, plot_history)):
        if path:
            draw(rep, path)
            log.print(f"[dim]wrote {path}[/dim]")
