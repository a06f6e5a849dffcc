"""Two plots of a study's report (:func:`.summary.build_report`), at a paper's column width:
the trade-off (every trained trial, the front, the baselines labelled, the budget as a line)
and the best value so far against the trial number. Results floor; matplotlib is imported
when a plot is drawn.
"""

from __future__ import annotations

import math
from io import BytesIO
from pathlib import Path

from ..errors import UsageError
from ..exports import atomic_write, check_export_path
from .vocabulary import COSTS, MAXIMIZED, OBJECTIVE_ATTR, OBJECTIVE_LABELS

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
AXIS_LABELS = OBJECTIVE_LABELS
AXIS_SCALES = {"macs": 1e-9, "params": 1e-6, "train_mem": 2**-30}
AXIS_UNITS = {"macs": "GMACs", "params": "M params", "train_mem": "GiB"}
BUDGET_OF_AXIS = {"macs": ("macs", "min_macs"), "params": ("params",), "train_mem": ("memory_bytes",)}
PAPER_STYLE = {
    "font.size": 7,
    "axes.labelsize": 7,
    "axes.titlesize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6,
    "axes.linewidth": 0.6,
    "lines.linewidth": 0.9,
    "savefig.dpi": 300,
    "font.family": "DejaVu Sans",
}
COLUMN_WIDTH_IN = 3.5  # one column of a two-column paper


def plot_axes(rep: dict) -> tuple[str, str]:
    """(x, y) objective names of the trade-off plot: the study's two objectives (the cost on x),
    else MACs on x and the first objective (top-1 if that is a cost) on y."""
    objectives = [o for o in rep["objectives"] if o in OBJECTIVE_ATTR]
    if len(objectives) == 2 and len(rep["objectives"]) == 2:
        first, second = objectives
        return (first, second) if first in COSTS and second not in COSTS else (second, first)
    y = objectives[0] if objectives and objectives[0] not in COSTS else "top1"
    if (
        y == "top1"
        and objectives
        and not any(r["top1"] is not None for r in rep["trials"] if r["status"] == "completed")
    ):
        y = objectives[0]  # a cost-only search trains nothing: its objective against MACs (or params)
    return ("params" if y == "macs" else "macs"), y


def _value(record: dict, name: str):
    v = record.get(OBJECTIVE_ATTR[name])
    return None if v is None else v * AXIS_SCALES.get(name, 1.0)


def tradeoff_front(points: list[tuple[float, float, int]], x_min: bool, y_max: bool) -> list[int]:
    """The trials (third element) no other point beats on both axes, sorted along x."""
    sx, sy = (1 if x_min else -1), (-1 if y_max else 1)
    front, best = [], math.inf
    for x, y, n in sorted(points, key=lambda p: (sx * p[0], sy * p[1])):
        if sy * y < best:
            front.append(n)
            best = sy * y
    return front


def check_figure_path(path: str | Path) -> Path:
    """Fail early on an unknown figure suffix or an unwritable folder."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UsageError(
            f"cannot plot to {str(path)!r}: unknown suffix {path.suffix or '(none)'!r}; use one of "
            f"{', '.join(FIGURE_SUFFIXES)}"
        )
    check_export_path(path.with_suffix(".csv"))  # the same folder checks as the exports
    if path.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: it is a folder; choose a file name")
    return path


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (its suffix the format), atomically."""
    path = check_figure_path(path)
    buf = BytesIO()
    fig.savefig(buf, format=path.suffix.lower()[1:], bbox_inches="tight", pad_inches=0.02)
    return atomic_write(path, buf.getvalue())


def _short_layout(layout: str) -> str:
    """'B6(197)-6(99), h192, a3' -> 'B6(197)-6(99)\\nh192, a3': two lines fit beside a point."""
    head, _, rest = (layout or "?").partition(", ")
    return head + ("\n" + rest if rest else "")


def plot_tradeoff(rep: dict, path: str | Path) -> Path:
    """Trade-off plot at a paper's column width: every trained trial a point (within budget in
    colour, over budget grey), pruned trials grey crosses (their partial top-1), baselines as labelled diamonds, the front of
    the feasible trials as a step line, the budget as a dashed line."""
    import matplotlib
    from matplotlib.figure import Figure

    x_name, y_name = plot_axes(rep)
    x_min, y_max = x_name not in MAXIMIZED, y_name in MAXIMIZED
    trained = [
        r
        for r in rep["trials"]
        if r["status"] == "completed" and _value(r, x_name) is not None and _value(r, y_name) is not None
    ]
    pruned = [
        r
        for r in rep["trials"]
        if r["status"] == "pruned" and _value(r, x_name) is not None and _value(r, y_name) is not None
    ]
    feasible = [r for r in trained if r["feasible"]]
    if sorted(rep["objectives"]) == sorted((x_name, y_name)):  # the study's own Pareto front
        front_numbers = set(rep["front_trials"])
    else:  # one objective: the feasible trials no other beats on both axes (best top-1 for its MACs)
        front_numbers = set(
            tradeoff_front([(_value(r, x_name), _value(r, y_name), r["trial"]) for r in feasible], x_min, y_max)
        )
    front = sorted((r for r in feasible if r["trial"] in front_numbers), key=lambda r: _value(r, x_name))

    with matplotlib.rc_context(PAPER_STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, 2.6))
        ax = fig.add_subplot()
        grey = "#b0b0b0"
        if pruned:
            ax.scatter(
                [_value(r, x_name) for r in pruned],
                [_value(r, y_name) for r in pruned],
                s=9,
                marker="x",
                color=grey,
                linewidths=0.6,
                label="pruned (partial)",
                zorder=1,
            )
        infeasible = [r for r in trained if not r["feasible"] and not r["baseline"]]
        if infeasible:
            ax.scatter(
                [_value(r, x_name) for r in infeasible],
                [_value(r, y_name) for r in infeasible],
                s=10,
                color=grey,
                label="over budget",
                zorder=2,
            )
        searched = [r for r in feasible if not r["baseline"]]
        ax.scatter(
            [_value(r, x_name) for r in searched],
            [_value(r, y_name) for r in searched],
            s=10,
            color="#1f77b4",
            alpha=0.8,
            linewidths=0,
            label="within budget",
            zorder=3,
        )
        if front:
            xs, ys = [_value(r, x_name) for r in front], [_value(r, y_name) for r in front]
            ax.step(xs, ys, where="post", color="#d62728", lw=0.9, zorder=4, label="Pareto front")
            ax.scatter(xs, ys, s=14, facecolors="none", edgecolors="#d62728", linewidths=0.8, zorder=5)
        baselines = [r for r in trained if r["baseline"]]
        for feasible_group, label in ((True, "baseline"), (False, "baseline over budget")):
            group = [r for r in baselines if r["feasible"] == feasible_group]
            if group:
                ax.scatter(
                    [_value(r, x_name) for r in group],
                    [_value(r, y_name) for r in group],
                    s=22,
                    marker="D",
                    color="black" if feasible_group else grey,
                    edgecolors="black",
                    linewidths=0.5,
                    zorder=6,
                    label=label,
                )
        budgets = rep["settings"].get("budgets") or {}
        for axis, line in ((x_name, ax.axvline), (y_name, ax.axhline)):
            for key in BUDGET_OF_AXIS.get(axis, ()):
                if budgets.get(key):
                    limit = budgets[key] * AXIS_SCALES.get(axis, 1.0)
                    line(
                        limit,
                        color="#555555",
                        ls="--",
                        lw=0.7,
                        zorder=1,
                        label=f"{'budget' if key != 'min_macs' else 'budget floor'} {limit:.3g} {AXIS_UNITS[axis]}",
                    )
        ax.margins(x=0.08, y=0.08)
        ax.set_xlabel(AXIS_LABELS[x_name])
        ax.set_ylabel(AXIS_LABELS[y_name])
        ax.grid(True, lw=0.3, color="#e0e0e0")
        ax.set_axisbelow(True)
        _legend(ax)
        fig.set_layout_engine("constrained")
        _label_baselines(
            fig,
            ax,
            [
                (_value(r, x_name), _value(r, y_name), _short_layout(r["target_layout"]), f"#{r['trial']}")
                for r in baselines
            ],
        )
        return save_figure(fig, path)


def _legend(ax) -> None:
    """Above the axes, in rows of three: never on top of a point."""
    ax.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=3,
        frameon=False,
        handletextpad=0.3,
        columnspacing=1.0,
        borderaxespad=0.2,
    )


def _label_baselines(fig, ax, points: list[tuple[float, float, str, str]]) -> None:
    """Write each baseline's layout beside its point where it covers the fewest points and no
    other label: of four places (above or below, right or left), the first that is clear, and
    inside the axes. Where the layout fits nowhere without covering another label (many
    baselines close together), the short label (its trial number, ``#3``) is written instead;
    the report's table names every trial."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # lay the figure out, so that data map to their final place
    frame = ax.get_window_extent(renderer)
    dots = (
        ax.transData.transform([(x, y) for c in ax.collections for x, y in c.get_offsets()]) if ax.collections else []
    )
    taken = []
    places = ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"), (-4, -3, "right", "top"))
    for x, y, long_text, short_text in points:
        best = None
        for text, dx, dy, ha, va in [(long_text, *p) for p in places] + [(short_text, *p) for p in places]:
            if text is short_text and best is not None and best[0] < 10:
                break  # the layout found a place clear of other labels
            label = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=5.5, ha=ha, va=va, zorder=7
            )
            box = label.get_window_extent(renderer)
            outside = box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1
            cost = (
                100 * outside + 10 * sum(box.overlaps(t) for t in taken) + sum(box.contains(px, py) for px, py in dots)
            )
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, label, box)
            else:
                label.remove()
            if cost == 0:
                break
        taken.append(best[2])


def best_so_far(records: list[dict], column: str, maximize: bool) -> tuple[list[int], list[float]]:
    """The step line of the history plot: after each feasible trained trial (``records`` in
    trial order), the best ``column`` so far; with --fidelity asha (records with a ``rung``) the
    search's answer so far, the best at the highest rung reached (a value after 1 epoch never
    beats one after 4: :func:`.asha.answer`'s rule)."""
    sign = 1.0 if maximize else -1.0
    best, xs, ys = None, [], []
    for r in records:
        if r["feasible"]:
            key = (r.get("rung") or 0, sign * r[column])
            best = key if best is None or key > best else best
            xs.append(r["trial"])
            ys.append(sign * best[1])
    return xs, ys


def plot_history(rep: dict, path: str | Path) -> Path:
    """The first objective of every trained trial against its trial number, with the best
    feasible value so far as a step line (with --fidelity asha the answer so far:
    :func:`best_so_far`); over budget and baselines marked."""
    import matplotlib
    from matplotlib.figure import Figure

    name = rep["objectives"][0]
    maximize = rep["directions"][0] == "maximize"
    column = OBJECTIVE_ATTR.get(name, name)
    scale = AXIS_SCALES.get(name, 1.0)
    trained = sorted(
        (r for r in rep["trials"] if r["status"] == "completed" and r.get(column) is not None), key=lambda r: r["trial"]
    )
    xs, ys = best_so_far(trained, column, maximize)
    ys = [y * scale for y in ys]
    asha = any(r.get("rung") is not None for r in trained)
    with matplotlib.rc_context(PAPER_STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, 2.2))
        ax = fig.add_subplot()
        grey = "#b0b0b0"
        for group, style in (
            (
                [r for r in trained if r["feasible"] and not r["baseline"]],
                dict(color="#1f77b4", s=9, label="within budget"),
            ),
            (
                [r for r in trained if not r["feasible"] and not r["baseline"]],
                dict(color=grey, s=9, label="over budget"),
            ),
            (
                [r for r in trained if r["baseline"] and r["feasible"]],
                dict(color="black", marker="D", s=16, label="baseline"),
            ),
            (
                [r for r in trained if r["baseline"] and not r["feasible"]],
                dict(color=grey, marker="D", s=16, edgecolors="black", label="baseline over budget"),
            ),
        ):
            if group:
                ax.scatter(
                    [r["trial"] for r in group],
                    [r[column] * scale for r in group],
                    linewidths=0.5 if "edgecolors" in style else 0,
                    **style,
                )
        if xs:
            last = max(r["trial"] for r in rep["trials"])
            label = "answer so far (best at the highest rung)" if asha else "best so far (within budget)"
            ax.step(xs + [last], ys + [ys[-1]], where="post", color="#d62728", lw=0.9, label=label)
        ax.set_xlabel("trial number")
        ax.set_ylabel(AXIS_LABELS.get(name, name))
        ax.grid(True, lw=0.3, color="#e0e0e0")
        ax.set_axisbelow(True)
        _legend(ax)
        fig.set_layout_engine("constrained")
        return save_figure(fig, path)


__all__ = [
    "plot_tradeoff",
    "plot_history",
    "best_so_far",
    "plot_axes",
    "tradeoff_front",
    "check_figure_path",
    "save_figure",
    "FIGURE_SUFFIXES",
    "AXIS_LABELS",
    "AXIS_SCALES",
    "AXIS_UNITS",
    "BUDGET_OF_AXIS",
    "PAPER_STYLE",
    "COLUMN_WIDTH_IN",
]
