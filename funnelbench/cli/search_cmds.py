"""``funnelbench spaces`` and ``funnelbench search``: thin layers over :mod:`funnelbench.search`."""

from __future__ import annotations

import typer
from rich.markup import escape

from ..tables import MACS_NOTE, human
from ..training.proxy import PROXY_FIELDS
from ._common import command, console, fail, make_table, print_json
from .train_cmds import _RUN_OPTIONS, with_training_options


@command("spaces")
def spaces_cmd(
    name: str = typer.Argument(None, help="A shipped space's name or a .yaml file: show its decisions and extremes."),
    budget_flops: str = typer.Option(
        None,
        "--budget-flops",
        "--budget-macs",
        help="With NAME: how many layouts have at most this many MACs per image (the papers' FLOPs), e.g. 1.26G.",
    ),
    min_flops: str = typer.Option(None, "--min-flops", "--min-macs", help="With NAME: ... and at least this many."),
    budget_params: str = typer.Option(None, "--budget-params", help="With NAME: ... and at most this many params."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
):
    """List the shipped search spaces, or show one: its decisions, how many distinct layouts it
    holds, and its cheapest and dearest layouts in MACs and params (exact, nothing built). With
    a budget, how many layouts meet it (exact): what random search and every sampler's start-up
    draw from, uniformly."""
    from ..search.space import describe, load_space, space_summaries

    if name is None:
        rows = space_summaries()
        if json_out:
            print_json(rows)
            return
        console.print(
            make_table(
                None,
                ["space", "layouts", "MACs from", "MACs to", "baselines", "description"],
                [
                    [
                        r["space"],
                        f"{r['layouts']:,}",
                        human(r["min_macs"]),
                        human(r["max_macs"]),
                        r["baselines"],
                        r["description"],
                    ]
                    for r in rows
                ],
                right={"layouts", "MACs from", "MACs to", "baselines"},
            )
        )
        console.print(f"[dim]`funnelbench spaces NAME` shows one; {MACS_NOTE}.[/dim]")
        return
    space = load_space(name)
    stats = space.stats()
    feasible = _feasible_line(space, budget_flops, min_flops, budget_params)
    extremes = [
        ("cheapest in MACs", stats.cheapest_macs),
        ("dearest in MACs", stats.dearest_macs),
        ("fewest params", stats.cheapest_params),
        ("most params", stats.dearest_params),
    ]
    if json_out:
        print_json(
            {
                "space": space.name,
                "file": space.path,
                "description": space.description,
                "layouts": stats.layouts,
                "decisions": describe(space),
                "extremes": [{"which": w, "layout": str(l), "macs": m, "params": p} for w, (l, m, p) in extremes],
                "baselines": [str(b) for b in space.baselines],
                "proxy": space.proxy,
                **({"within_budget": feasible[0], "budget": feasible[1]} if feasible else {}),
            }
        )
        return
    console.print(f"[bold]{escape(space.name)}[/bold]: {escape(space.description)}")  # the file's text, not markup
    console.print(f"{stats.layouts:,} distinct layouts" + (f"; file {space.path}" if space.path else ""))
    console.print(
        make_table(
            None, ["decision", "stages", "values"], [[r["decision"], r["stages"], r["values"]] for r in describe(space)]
        )
    )
    console.print(
        make_table(
            None,
            ["", "layout", "MACs", "params"],
            [[w, str(l), human(m), human(p)] for w, (l, m, p) in extremes],
            right={"MACs", "params"},
        )
    )
    if space.baselines:
        console.print("baselines: " + "; ".join(str(b) for b in space.baselines))
    if space.proxy:
        console.print(
            "proxy (what a search trains unless its command says otherwise): "
            + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in space.proxy.items())
        )
    if feasible:
        count, text = feasible
        share = "" if count is None else f" ({100 * count / stats.layouts:.3g} %)"
        console.print(
            f"within the budget ({text}): "
            + (
                f"{count:,} of {stats.layouts:,} layouts{share}"
                if count is not None
                else "too many prefixes to count exactly; a search draws from them by rejection"
            )
        )
    console.print(f"[dim]{MACS_NOTE}; full-size layouts, one image.[/dim]")


def _feasible_line(space, budget_flops, min_flops, budget_params):
    """(exact count or None, the budget in words), or None without a budget."""
    if not (budget_flops or min_flops or budget_params):
        return None
    from ..search.budget import Budgets
    from ..search.feasible import feasible_count
    from ..units import parse_count

    budgets = Budgets(
        macs=parse_count(budget_flops, "--budget-flops") if budget_flops else None,
        min_macs=parse_count(min_flops, "--min-flops") if min_flops else None,
        params=parse_count(budget_params, "--budget-params") if budget_params else None,
    )
    found = feasible_count(space, budgets)
    return (None if found is None else found.total), "; ".join(budgets.lines())


# ----------------------------------------------------------------------------- search

_BUDGET = "Budget (judges the full-size layout, before anything is built)"
MAX_HEARTBEAT_S = 3600  # a dead worker's trial is noticed after 3 heartbeats: at most 3 hours
_SEARCH = "Search"
_WORKERS = "Workers"
# Every `funnelbench train` option applies to each trial's proxy training, except the run's own
# (--out, --resume, ...) and the data loader's --workers: here --workers means worker processes.
_NOT_PROXY_OPTIONS = frozenset({name for name, _, _ in _RUN_OPTIONS} | {"workers"})
# The options a space's `proxy:` section may set; unless given, the search takes them from there.
_SPACE_PROXY_OPTIONS = frozenset(PROXY_FIELDS) - {"width_scale"}  # --width-scale is the search's own option


@command("search")
@with_training_options(
    exclude=_NOT_PROXY_OPTIONS, defaults_from="the space's proxy section", defaults_for=_SPACE_PROXY_OPTIONS
)
def search_cmd(
    space: str = typer.Option(
        "tiny",
        "--space",
        help="A shipped space (`funnelbench spaces` lists them) or a .yaml file.",
        rich_help_panel=_SEARCH,
    ),
    trials: int = typer.Option(
        20,
        "--trials",
        help="Trained trials in total (baselines included; rejected candidates "
        "and repeats are counted separately). Re-running the command continues the study to this "
        "total.",
        rich_help_panel=_SEARCH,
    ),
    budget_flops: str = typer.Option(
        None,
        "--budget-flops",
        "--budget-macs",
        help="Most MACs per image, as the papers count FLOPs (one multiply-accumulate = 1; "
        "DeiT-S is 4.6G): 4.6G is 4.60 GMACs, i.e. 9.20 GFLOPs as 2 x MACs. Suffixes K, M, G, T.",
        rich_help_panel=_BUDGET,
    ),
    min_flops: str = typer.Option(
        None,
        "--min-flops",
        "--min-macs",
        help="Fewest MACs per image (a floor: re-invest the budget rather than shrink), same convention.",
        rich_help_panel=_BUDGET,
    ),
    budget_params: str = typer.Option(
        None, "--budget-params", help="Most parameters, e.g. 22M.", rich_help_panel=_BUDGET
    ),
    budget_memory: str = typer.Option(
        None,
        "--budget-memory",
        help="Most estimated training memory at --memory-batch, "
        "e.g. 16GiB (analytic: a GPU budget checked without the GPU).",
        rich_help_panel=_BUDGET,
    ),
    memory_batch: int = typer.Option(
        64, "--memory-batch", help="Batch size the memory budget is judged at.", rich_help_panel=_BUDGET
    ),
    memory_device: str = typer.Option(
        "cuda", "--memory-device", help="cpu or cuda: whose memory the estimate models.", rich_help_panel=_BUDGET
    ),
    memory_dtype: str = typer.Option(
        "fp32", "--memory-dtype", help="fp32, bf16 or fp16 autocast, for the estimate.", rich_help_panel=_BUDGET
    ),
    objective: list[str] = typer.Option(
        ["top1"],
        "--objective",
        help="Repeatable: top1 (best proxy val top-1, the default), "
        "top5, val_loss, macs, params, train_mem (the estimate), train_img_per_s (proxy "
        "training), infer_img_per_s (the full-size layout, measured here with the "
        "profiler's cheap settings). Only macs/params/train_mem/infer_img_per_s: a "
        "cost-only search, nothing trained.",
        rich_help_panel=_SEARCH,
    ),
    sampler: str = typer.Option(
        "tpe",
        "--sampler",
        help="tpe (multivariate, grouped, constant liar), nsga2, random or "
        "gp. Random search, and the others' start-up (10 trainings; NSGA-II's first population "
        "of 20), draw uniformly from the layouts within the budget. Seeded with --seed (also the "
        "proxy training's seed): the same space, budget and seed give the same candidates.",
        rich_help_panel=_SEARCH,
    ),
    pruner: str = typer.Option(
        None,
        "--pruner",
        help="median, hyperband or none; never after a trial's last epoch. "
        "Default: median for one trained objective at 8 epochs or more, else none (at 4 epochs "
        "it saved 7.5 % of the compute and took a third of the trainings out of the pick); "
        "hyperband needs 9 epochs or more (rungs at 1, 3, 9, ...).",
        rich_help_panel=_SEARCH,
    ),
    fidelity: str = typer.Option(
        "none",
        "--fidelity",
        help="none (each candidate trains --epochs once) or asha: asynchronous successive halving. "
        "Candidates train --min-epochs; the best 1/--reduction of each rung continue their checkpoint to "
        "the next rung (R, R*ETA, R*ETA^2, ... epochs, and --max-epochs last), across workers and machines. "
        "Needs --schedule wsd (each rung decays on its own; a promotion continues the stable checkpoint "
        "before that decay) or constant, and one trained objective; --trials then counts the trainings of every "
        "rung, and the answer is the best at the highest rung reached.",
        rich_help_panel=_SEARCH,
    ),
    min_epochs: int = typer.Option(
        None, "--min-epochs", help="asha: epochs of the first rung. Default: 1.", rich_help_panel=_SEARCH
    ),
    max_epochs: int = typer.Option(
        None,
        "--max-epochs",
        help="asha: epochs of the last rung, at most --epochs. Default: --epochs.",
        rich_help_panel=_SEARCH,
    ),
    reduction: int = typer.Option(
        None,
        "--reduction",
        help="asha: ETA, the factor between rungs; the best 1/ETA of a rung are promoted. Default: 3.",
        rich_help_panel=_SEARCH,
    ),
    baseline: list[str] = typer.Option(
        [],
        "--baseline",
        help="Repeatable: a layout or preset trained first (after the "
        "space's own baselines), even over the budget; never the best trial.",
        rich_help_panel=_SEARCH,
    ),
    width_scale: float = typer.Option(
        None,
        "--width-scale",
        help="Proxy: every stage's hidden and MLP widths times F "
        "(0 < F <= 1; heads kept, the width rounded to a multiple of them), e.g. 0.25 to "
        "explore ViT-B widths on a CPU. Budgets still judge the full width. Default: the "
        "space's proxy section, else 1.",
        rich_help_panel=_SEARCH,
    ),
    study: str = typer.Option(
        None, "--study", help="Study name. Default: from the space, budgets and objectives.", rich_help_panel=_SEARCH
    ),
    storage: str = typer.Option(
        None,
        "--storage",
        help="Any Optuna storage URL. Default: SQLite in runs/search/STUDY/study.db.",
        rich_help_panel=_SEARCH,
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the summary as JSON (progress goes to stderr).", rich_help_panel=_SEARCH
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        help="Worker processes sharing the study on this machine, each with "
        "cores / N torch threads or, with GPUs, one GPU each. With N > 1 the default storage is "
        "Optuna's journal file in the study's folder (SQLite is refused: 'database is locked'). "
        "At most one per CPU core (or per GPU, where GPUs outnumber the cores); no more are started than trials "
        "are left to train. "
        "Many machines: run the same command on each with one --storage postgresql://...",
        rich_help_panel=_WORKERS,
    ),
    # 20 = search.storage.HEARTBEAT_S (not imported here: it loads optuna for every command)
    heartbeat: int = typer.Option(
        20,
        "--heartbeat",
        help="Seconds between a running trial's heartbeats; a trial "
        "silent for 3 of them (its worker was killed, its machine stopped) is recorded as "
        "interrupted and its configuration tried once more, from its last epoch checkpoint.",
        rich_help_panel=_WORKERS,
    ),
    options: dict = None,
):
    """Search a space of layouts under a compute budget, with short proxy training as the objective.

    Every candidate's full-size layout is counted first: one over a budget is never built,
    only recorded (TPE and NSGA-II learn the infeasible region through `trial.set_constraint`).
    The first 10 trainings (random search: all) are drawn uniformly from the layouts within
    the budget, so none is wasted. The rest train briefly (all `funnelbench train` options
    apply), reporting top-1 each epoch for the pruner. Baselines run first, once. The study lives in
    runs/search/STUDY/ (one folder per trial); re-running the command continues it.

    A training option not given comes from the space's `proxy:` section, then from `funnelbench
    train`'s defaults. funnel-reinvest-ti's (16 px, 4 px patches, widths x 1/4, 4 epochs) is
    the proxy benchmarks/bench_proxy_fidelity.py found to rank 27 layouts best against 5x longer
    training: Kendall tau 0.66-0.68 for one run, where two long runs agree at 0.62 and the
    earlier 32 px proxy reached 0.36-0.45 (docs/search.md, "How far to trust the proxy").
    """
    import functools
    import sys

    from rich.console import Console

    from ..search.faults import one_line, storage_errors
    from ..search.signals import Interrupted, signals_interrupt
    from ..search.study import search, summary
    from ..units import parse_bytes, parse_count

    for option, value, largest in (
        ("--heartbeat", heartbeat, MAX_HEARTBEAT_S),
        ("--memory-batch", memory_batch, 2**20),
    ):
        if not 1 <= value <= largest:  # before anything is written (the study's folder, its storage)
            fail(f"{option} {value}: must be between 1 and {largest}")
    out_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200) if json_out else console
    if workers > 1:  # the workers print one line per trial; no live bar under them
        out_console = Console(file=out_console.file, width=200, force_terminal=False)
    progress = SearchProgress(out_console)
    try:
        with signals_interrupt():
            result = search(
                space,
                trials=trials,
                budget_macs=parse_count(budget_flops, "--budget-flops") if budget_flops is not None else None,
                min_macs=parse_count(min_flops, "--min-flops") if min_flops is not None else None,
                budget_params=parse_count(budget_params, "--budget-params") if budget_params is not None else None,
                budget_memory=parse_bytes(budget_memory, "--budget-memory") if budget_memory is not None else None,
                memory_batch=memory_batch,
                memory_device=memory_device,
                memory_dtype=memory_dtype,
                objectives=tuple(objective),
                sampler=sampler,
                pruner=pruner,
                baselines=tuple(baseline),
                width_scale=width_scale,
                study=study,
                storage=storage,
                on_event=progress,
                workers=workers,
                heartbeat_s=heartbeat,
                worker_events=functools.partial(worker_progress, stderr=json_out),
                fidelity=fidelity,
                min_epochs=min_epochs,
                max_epochs=max_epochs,
                reduction=reduction,
                **{k: v for k, v in options.items() if v is not None},
            )
    except Interrupted as stop:
        progress.close()
        fail(
            f"interrupted by {stop}: the running trials are recorded as interrupted; re-run the command to continue",
            code=stop.exit_code,
        )
    except storage_errors() as err:
        progress.close()
        fail(f"storage: {one_line(err)}; no finished trial is lost: fix it and re-run the command to continue")
    finally:
        progress.close()
    info = summary(result)
    if json_out:
        print_json(info)
        return
    print_summary(out_console, info)


def _pct(v) -> str:
    return "" if v is None else f"{v:.1f}"


def print_summary(out, info: dict) -> None:
    c = info["counts"]
    objectives = info["settings"].get("objectives", ["top1"])
    out.print(
        f"{c['trained']} trained ({c['completed']} completed, {c['pruned']} pruned, {c['failed']} failed), "
        f"{c['rejected']} rejected by the budget, {c['repeats']} repeat(s) of a finished layout"
    )
    if info.get("by_rung"):
        from ..search.records import rung_text

        out.print(f"trainings by rung: {rung_text(info['by_rung'])}; the best trial is the best at the highest rung")
    rows = info["best"]
    title = "best trial" if len(objectives) == 1 else f"Pareto front ({', '.join(objectives)})"
    if rows:
        table = make_table(
            title,
            ["trial", "layout (full size)", "params", "MACs", "top-1 %", "top-5 %", "val loss", "epochs", "baseline"],
            [
                [
                    r["number"],
                    r["target_layout"],
                    human(r["params"]),
                    human(r["macs"]),
                    _pct(r["top1"]),
                    _pct(r["top5"]),
                    "" if r["val_loss"] is None else f"{r['val_loss']:.3f}",
                    r["epochs_done"],
                    "yes" if r["baseline"] else "",
                ]
                for r in rows
            ],
            right={"trial", "params", "MACs", "top-1 %", "top-5 %", "val loss", "epochs"},
        )
        table.columns[1].min_width = min(48, max(len(r["target_layout"]) for r in rows))  # layouts stay readable
        out.print(table)
    else:
        out.print("no feasible trial finished yet")
    out.print(
        f"study {info['study']} stored in {info['storage']} (trial folders in {info['out']}); "
        f"see it with: [bold]{info['report_command']}[/bold]"
    )
    out.print(f"[dim]{MACS_NOTE}; baselines over the budget are trained but never the best.[/dim]")


def worker_progress(stderr: bool = False):
    """What each process of `search --workers N` prints: one line per finished trial (the
    parent prints the study's start and summary)."""
    import sys

    from rich.console import Console

    progress = SearchProgress(Console(file=sys.stderr if stderr else sys.stdout, width=200, force_terminal=False))

    def on_event(kind, info):
        if kind not in ("start", "end"):
            progress(kind, info)

    return on_event


class SearchProgress:
    """The progress line (trial k of N, rejected, pruned, failed, best so far) and the current
    trial's epoch bar on a terminal; one line per finished trial otherwise."""

    def __init__(self, out):
        self.out = out
        self.progress = None
        self.trials_task = self.epoch_task = None
        self.total = 0
        self.best, self.best_rung = None, 0
        self.objectives = ("top1",)
        self.directions = ("maximize",)

    def __call__(self, kind: str, info: dict) -> None:
        getattr(self, "on_" + kind, lambda info: None)(info)

    def on_start(self, info):
        b, s = info["budgets"], info["settings"]
        self.total, self.objectives, self.directions = info["trials"], s.objectives, s.directions
        lines = b.lines()
        self.out.print("budget: " + ("; ".join(lines) if lines else "none") + " (judged on the full-size layout)")
        what = "continuing" if not info["created"] else "new"
        self.out.print(
            f"{what} study [bold]{info['study']}[/bold]: space {info['space'].name}, "
            f"objectives {', '.join(s.objectives)}, sampler {s.sampler} (seed {s.seed}), pruner {s.pruner}; "
            f"{info['counts']['trained']} of {self.total} trials trained so far"
        )
        if s.rungs is not None:
            self.out.print(
                f"fidelity asha: rungs at {', '.join(map(str, s.rungs))} epochs, the best 1/{s.reduction} of each "
                f"promoted; --trials counts the trainings of every rung"
            )
        if info.get("workers_asked", 0) > info.get("workers", 0):
            c = info["counts"]
            self.out.print(
                f"workers: {info['workers']} of --workers {info['workers_asked']}, since only "
                f"{max(0, info['trials'] - c['trained'] - c['running'])} trial(s) are left to train"
            )
        if info["warning"]:
            self.out.print(f"[yellow]warning:[/yellow] {info['warning']}")
        if info["stale"]:
            self.out.print(
                f"trial(s) {', '.join(map(str, info['stale']))} were running when their process ended: "
                "recorded as interrupted and queued again"
            )
        if self.out.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.out,
            )
            self.progress.start()
            self.trials_task = self.progress.add_task(
                "trials", total=self.total, completed=info["counts"]["trained"], info=""
            )
        self._counts = info["counts"]

    def on_trial_start(self, info):
        if self.progress:
            if self.epoch_task is not None:
                self.progress.remove_task(self.epoch_task)
            mark = " (baseline)" if info["baseline"] else ""
            self.epoch_task = self.progress.add_task(f"  trial {info['number']}{mark}", total=None, info=info["layout"])

    def on_epoch(self, info):
        if self.progress and self.epoch_task is not None:
            m = info["metrics"]
            top1 = m.get("val_top1")
            self.progress.update(
                self.epoch_task,
                total=info["epochs"],
                completed=info["epoch"],
                info=f"top-1 {100 * top1:.1f} %" if top1 is not None else "",
            )

    def on_trial_end(self, info):
        a, values = info["attrs"], info["values"]
        if values is not None and not a["over_budget"]:
            # with rungs (asha) the best at the highest rung so far: a lower fidelity never beats a higher
            v, rung = values[0], a.get("rung") or 0
            if (
                self.best is None
                or rung > self.best_rung
                or (rung == self.best_rung and (v > self.best if self.directions[0] == "maximize" else v < self.best))
            ):
                self.best, self.best_rung = v, rung
        top1 = f"top-1 {_pct(a['top1'])} %  " if a["top1"] is not None else ""
        rung = (
            ""
            if a.get("rung") is None
            else f" (rung {a['rung']}, {a['epochs_done']} epoch{'' if a['epochs_done'] == 1 else 's'})"
        )
        self.out.print(
            f"trial {info['number']}{' (baseline)' if a['baseline'] else ''}{rung}: {info['status']}  "
            f"{a['target_layout']}  {top1}{human(a['macs'])}MACs  {a['wall_s']:.1f} s"
            + (f"  ({a['error']})" if a.get("error") else "")
        )  # above the live bars on a terminal

    def on_progress(self, info):
        c = info["counts"]
        best = "" if self.best is None else f"best {self.objectives[0]} {self.best:.4g}"
        text = f"rejected {c['rejected']}  pruned {c['pruned']}  failed {c['failed']}  repeats {c['repeats']}  {best}"
        if self.progress:
            self.progress.update(self.trials_task, completed=min(c["trained"], self.total), info=text)

    def on_workers_lost(self, info):
        for line in info["lines"]:
            self.out.print(f"[yellow]warning:[/yellow] {line}; its trial was recorded and retried by the others")

    def on_stalled(self, info):
        self.out.print(
            f"[yellow]warning:[/yellow] {info['idle']} candidates in a row were rejected or repeats; "
            "stopping (the space under this budget may be exhausted)"
        )

    def close(self):
        if self.progress:
            self.progress.stop()
            self.progress = None
