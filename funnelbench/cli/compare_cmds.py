"""``funnelbench compare``: a thin layer over :mod:`funnelbench.search.compare`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from ..exports import check_export_path, export_records
from ..search.vocabulary import DEFAULT_OUT_DIR
from ._common import command, console, make_table, print_json


@command("compare")
def compare_cmd(
    studies: list[str] = typer.Argument(
        ..., help="Study names (as given to funnelbench search); studies that differ only in their seed make one band."
    ),
    storage: str = typer.Option(
        None,
        "--storage",
        help="Optuna storage URL or file that holds every study. Default: "
        "each study's own OUT_DIR/STUDY/study.db or journal.log.",
    ),
    out_dir: str = typer.Option(DEFAULT_OUT_DIR, "--out-dir", help="Folder of the studies, each in OUT_DIR/STUDY/."),
    plot: str = typer.Option(
        None,
        "--plot",
        help="Best so far against trainings and against training seconds, a "
        "line per configuration with its 95 % band (.png/.pdf/.svg).",
    ),
    export: str = typer.Option(None, "--export", help="Write every curve point (.csv/.json) or the table (.md/.tex)."),
    json_out: bool = typer.Option(False, "--json", help="Print the table and the curves as JSON on stdout."),
):
    """Compare searches: the best value so far after N trainings, with 95 % bands across studies that share a configuration.

    Studies with the same space, budgets, objectives, sampler, pruner and proxy (only the seed
    differs) form one configuration; its row gives the mean best-so-far and a 95 % t interval
    over its studies after 5, 10, 20, ... trainings and at the end of the shortest. A training
    is a trial that trained (completed, pruned or failed; baselines included); rejected
    candidates cost nothing. Multi-objective studies compare by their hypervolume history,
    with one reference point for all.
    """
    from ..search.compare import compare_rows, curve_rows, group_curves, plot_compare, study_curve
    from ..search.report import check_figure_path, default_storage, read_study

    if len(set(studies)) != len(studies):
        raise UsageError(f"a study is named twice in {' '.join(studies)}; name each once")
    if plot:
        check_figure_path(plot)
    if export:
        check_export_path(export)
    curves = [study_curve(read_study(name, storage or default_storage(name, out_dir))) for name in studies]
    kinds = {c.metric for c in curves}
    if len(kinds) > 1:
        raise UsageError(
            f"the studies optimise different things ({', '.join(sorted(kinds))}); compare studies of one "
            "objective, or of the same objectives"
        )
    groups = group_curves(curves)
    rows = compare_rows(groups)
    if json_out:
        print_json({"configurations": rows, "curves": curve_rows(groups)})
    else:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        console.print(
            make_table(
                f"best {curves[0].metric} so far: mean [95 % band] over the studies of a configuration",
                cols,
                [[r.get(c, "") for c in cols] for r in rows],
                right={c for c in cols if c not in ("configuration", "metric")},
            )
        )
        lonely = [label for label, cs in groups.items() if len(cs) < 2]
        if lonely:
            console.print(
                f"[dim]no band for {', '.join(lonely)}: one study each (run it with other seeds to get one)[/dim]"
            )
        if curves[0].metric in ("top1", "top5"):
            console.print("[dim]top-1: the proxy's validation accuracy in %; a training: a trial that trained.[/dim]")
    if export:
        compact = Path(export).suffix.lower() in (".md", ".tex")
        export_records(rows if compact else curve_rows(groups), export)
        console.print(f"[dim]wrote {export}[/dim]")
    if plot:
        plot_compare(groups, plot)
        console.print(f"[dim]wrote {plot}[/dim]")
