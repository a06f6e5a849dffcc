"""Compare searches: the best value found so far against trainings and against training time,
with 95 % bands across searches that share a configuration (the same space, budgets, sampler,
pruner and proxy; only the seed differs), and the hypervolume history of multi-objective ones.

    curves = [study_curve(open_study(name)) for name in names]   # one per study
    groups = group_curves(curves)                              # {configuration label: [curves]}
    rows = compare_rows(groups)                                # the table
    plot_compare(groups, "compare.png")                        # two panels: trainings, seconds

The same :class:`Curve` describes a search a user ran and one the tabular benchmark simulates
(``benchmarks/table_searchers.py``), so both are drawn by the same code.

What counts: a *training* is a trial that trained (completed, pruned, failed, diverged, out of
memory: what ``--trials`` counts), baselines included, in the order the trainings finished; a
rejected or skipped candidate costs nothing and is not on the x axis. The best so far is the
best first objective among the completed trials within the budgets; *training seconds* are the
trainings' own wall seconds summed (compute, not the wall time of a search with many workers).
The band is a 95 % t interval of the mean over the group's searches at each x (where every
search has a value), so it needs at least two searches per configuration. Compute is also
counted in *image-epochs* (the epochs each training trained itself, times the training images).
With ``--fidelity asha`` a training is one rung's training, the best so far is the best at the
highest rung reached (a lower fidelity's value never beats a higher one's), and the row gives
the trainings by rung.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .plots import COLUMN_WIDTH_IN, PAPER_STYLE, save_figure
from .records import settings_of, trial_record

TRAINED = ("completed", "pruned", "failed", "diverged", "oom")
# settings that do not make a search a different configuration
_FREE = {"seed", "proxy.seed", "proxy.workers", "proxy.threads", "proxy.checkpoint", "proxy.device"}
CHECKPOINTS = (5, 10, 20, 50, 100, 200, 500)
PERCENT = ("top1", "top5")  # objectives a study stores in % (validation accuracy)


@dataclass
class Curve:
    """One search's progress: after the i-th training (``trainings[i]``, 1-based), the training
    seconds spent so far and the best value so far (None before the first feasible one)."""

    name: str
    metric: str  # "top1" ... or "hypervolume"
    maximize: bool
    trainings: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best: list[float | None] = field(default_factory=list)
    config: dict = field(default_factory=dict)  # the settings that make its configuration
    directions: list[str] = field(default_factory=list)  # of every objective ("maximize" / "minimize")
    points: list[list[float] | None] = field(default_factory=list)  # several objectives: each training's values
    image_epochs: list[float] = field(default_factory=list)  # compute so far: epochs trained x training images
    by_rung: dict = field(default_factory=dict)  # --fidelity asha: {epochs of the rung: trainings}

    def at(self, n: int) -> float | None:
        """Best so far after ``n`` trainings (None if it had fewer, or nothing feasible yet)."""
        return self.best[n - 1] if 1 <= n <= len(self.best) else None

    def at_seconds(self, s: float) -> float | None:
        """Best so far once ``s`` training seconds were spent (the last training finished by then)."""
        import bisect

        i = bisect.bisect_right(self.seconds, s)
        return self.best[i - 1] if i > 0 and s <= self.seconds[-1] else None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out[f"{prefix}{k}"] = tuple(v)
        else:
            out[f"{prefix}{k}"] = v
    return out


def study_config(settings: dict) -> dict:
    """The settings that make a search's configuration: everything but its seed and the options
    that do not change the numbers (threads, workers, checkpoints, device)."""
    return {k: v for k, v in _flat(settings).items() if k not in _FREE}


def study_curve(study) -> Curve:
    """The curve of a study written by ``funnelbench search`` (a single- or multi-objective one;
    the latter as its hypervolume history, with the reference point set by :func:`group_curves`)."""
    settings = settings_of(study)
    trials = [(t, trial_record(t)) for t in study.get_trials(deepcopy=False)]
    trained = [(t, r) for t, r in trials if r["status"] in TRAINED]
    trained.sort(key=lambda tr: (tr[0].datetime_complete is None, tr[0].datetime_complete or 0, tr[0].number))
    maximize = settings["directions"][0] == "maximize"
    curve = Curve(
        study.study_name,
        settings["objectives"][0] if len(settings["objectives"]) == 1 else "hypervolume",
        maximize,
        config=study_config(settings),
        directions=list(settings["directions"]),
    )
    fidelity = settings.get("fidelity") if isinstance(settings.get("fidelity"), dict) else {}
    epochs = fidelity.get("rungs") if isinstance(fidelity.get("rungs"), list) else []
    best, best_rung, spent, images = None, -1, 0.0, 0.0
    for i, (t, r) in enumerate(trained, 1):
        spent += float(r.get("wall_s") or 0.0)
        images += float(r.get("image_epochs") or 0.0)
        rung = r.get("rung")
        if rung is not None:
            key = epochs[rung] if 0 <= rung < len(epochs) else f"rung {rung}"
            curve.by_rung[key] = curve.by_rung.get(key, 0) + 1
        value = t.values if (r["status"] == "completed" and r["feasible"] and t.values is not None) else None
        if value is not None and len(settings["directions"]) == 1:
            # with --fidelity asha the answer so far: the best at the highest rung reached (a
            # value at a lower fidelity never beats one at a higher)
            v, at = value[0], -1 if rung is None else rung
            if best is None or at > best_rung or (at == best_rung and (v > best if maximize else v < best)):
                best, best_rung = v, at
        curve.points.append(list(value) if value is not None else None)
        curve.trainings.append(i)
        curve.seconds.append(spent)
        curve.image_epochs.append(images)
        curve.best.append(best)
    return curve


def hypervolume(points: list[list[float]], directions: list[str], reference: list[float]) -> float:
    """The hypervolume dominated by ``points`` (objective vectors) up to ``reference`` (a point
    worse than every one of them), every objective turned into a minimisation. Exact: a sweep for
    two objectives, Optuna's WFG algorithm for more."""
    import numpy as np

    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    ref = np.asarray(reference, float) * sign
    pts = np.asarray(points, float).reshape(-1, len(directions)) * sign
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 2:
        pts = pts[np.argsort(pts[:, 0], kind="stable")]
        volume, y_best = 0.0, ref[1]
        for x, y in pts:
            if y < y_best:
                volume += (ref[0] - x) * (y_best - y)
                y_best = y
        return float(volume)
    from optuna._hypervolume import compute_hypervolume  # optuna is pinned (constraints.txt)

    return float(compute_hypervolume(pts, ref))


def reference_point(curves: list[Curve]) -> list[float] | None:
    """The worst value of each objective over every search, pushed out by a tenth of its range:
    one reference for all the curves, so that their hypervolumes compare."""
    points = [p for c in curves for p in c.points if p is not None]
    if not points:
        return None
    directions = curves[0].directions
    ref = []
    for j, d in enumerate(directions):
        values = [p[j] for p in points]
        lo, hi = min(values), max(values)
        span = (hi - lo) or abs(hi) or 1.0
        ref.append(lo - 0.1 * span if d == "maximize" else hi + 0.1 * span)
    return ref


def fill_hypervolumes(curves: list[Curve]) -> list[float] | None:
    """Give multi-objective curves their hypervolume history (one reference for all); returns it."""
    multi = [c for c in curves if c.metric == "hypervolume"]
    ref = reference_point(multi)
    for c in multi:
        seen, c.best = [], []
        for p in c.points:
            if p is not None:
                seen.append(p)
            c.best.append(hypervolume(seen, c.directions, ref) if seen else None)
        c.maximize = True
    return ref


def group_curves(curves: list[Curve]) -> dict[str, list[Curve]]:
    """Curves grouped by configuration, each group labelled by the settings in which the groups
    differ (``sampler=tpe, pruner=none``); one group is labelled ``all``."""
    fill_hypervolumes(curves)
    configs: list[tuple] = []
    members: dict[tuple, list[Curve]] = {}
    for c in curves:
        key = tuple(sorted(c.config.items(), key=lambda kv: kv[0]))
        if key not in members:
            configs.append(key)
            members[key] = []
        members[key].append(c)
    if len(configs) == 1:
        return {"all": members[configs[0]]}
    keys = sorted({k for cfg in configs for k, _ in cfg})
    differing = [k for k in keys if len({dict(cfg).get(k) for cfg in configs}) > 1]
    groups: dict[str, list[Curve]] = {}
    for cfg in configs:
        d = dict(cfg)
        label = ", ".join(f"{k}={_short(d.get(k))}" for k in differing)
        groups.setdefault(label, []).extend(members[cfg])
    return groups


def _short(v) -> str:
    text = ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def band(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval of ``values`` (the interval is the mean itself for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def band_series(
    curves: list[Curve], xs: list[float], *, by: str = "trainings"
) -> list[tuple[float, float, float] | None]:
    """The band at every x (trainings or seconds); None where a search has no value there."""
    out = []
    for x in xs:
        values = [c.at(int(x)) if by == "trainings" else c.at_seconds(x) for c in curves]
        out.append(band(values) if values and all(v is not None for v in values) else None)
    return out


def compare_rows(groups: dict[str, list[Curve]], checkpoints=CHECKPOINTS) -> list[dict]:
    """One row per configuration: searches, trainings, and the best so far (mean [95 % band])
    after each checkpoint number of trainings that every search of the group reached, and at
    the end of the group's shortest search (its "trainings" column says how many)."""
    rows = []
    for label, curves in groups.items():
        shortest = min(len(c.trainings) for c in curves)
        row = {
            "configuration": label,
            "metric": curves[0].metric,
            "searches": len(curves),
            "trainings": f"{shortest}"
            if shortest == max(len(c.trainings) for c in curves)
            else f"{shortest}-{max(len(c.trainings) for c in curves)}",
            "training s (mean)": round(sum(c.seconds[-1] for c in curves if c.seconds) / len(curves), 1),
        }
        if any(c.image_epochs and c.image_epochs[-1] for c in curves):
            row["image-epochs (mean)"] = round(sum(c.image_epochs[-1] for c in curves if c.image_epochs) / len(curves))
        if any(c.by_rung for c in curves):  # --fidelity asha: the trainings of each rung, mean over the searches
            rungs = sorted({k for c in curves for k in c.by_rung}, key=lambda k: (isinstance(k, str), str(k).zfill(9)))
            row["trainings by rung (epochs: mean)"] = ", ".join(
                f"{k}: {sum(c.by_rung.get(k, 0) for c in curves) / len(curves):g}" for k in rungs
            )
        for n in [n for n in checkpoints if n <= shortest]:
            row[f"best after {n}"] = _fmt(band_series(curves, [n])[0], curves[0].metric)
        # one column for every row (a row's own end as "best after 39" left the others' empty)
        row["best at the end"] = _fmt(band_series(curves, [shortest])[0], curves[0].metric)
        rows.append(row)
    return rows


def _fmt(b, metric: str) -> str:
    if b is None:
        return ""
    digits = 1 if metric in PERCENT else 4
    mean, lo, hi = b
    return f"{mean:.{digits}f}" if lo == hi else f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def curve_rows(groups: dict[str, list[Curve]]) -> list[dict]:
    """Every curve point (for --export): configuration, search, training, seconds, best."""
    return [
        {
            "configuration": label,
            "search": c.name,
            "metric": c.metric,
            "training": n,
            "training_s": round(s, 3),
            "image_epochs": c.image_epochs[n - 1] if len(c.image_epochs) >= n else None,
            "best": b,
        }
        for label, curves in groups.items()
        for c in curves
        for n, s, b in zip(c.trainings, c.seconds, c.best)
    ]


def plot_compare(
    groups: dict[str, list[Curve]],
    path,
    *,
    title: str | None = None,
    hline: tuple[float, str] | None = None,
    ylabel: str | None = None,
):
    """Two panels: best so far against trainings and against training seconds, a line per
    configuration (the mean) with its 95 % band (two searches or more), thin lines for single
    searches. ``hline``: a reference value and its label (e.g. the best hand layout)."""
    import matplotlib
    from matplotlib.figure import Figure

    metric = next(iter(groups.values()))[0].metric
    with matplotlib.rc_context(PAPER_STYLE):
        fig = Figure(figsize=(2 * COLUMN_WIDTH_IN, 2.4))
        axes = fig.subplots(1, 2, sharey=True)
        for k, (label, curves) in enumerate(groups.items()):
            color = f"C{k % 10}"
            longest = max(len(c.trainings) for c in curves)
            t_max = min(c.seconds[-1] for c in curves if c.seconds) if all(c.seconds for c in curves) else 0
            for ax, by, xs in (
                (axes[0], "trainings", list(range(1, longest + 1))),
                (axes[1], "seconds", [t_max * i / 200 for i in range(1, 201)] if t_max > 0 else []),
            ):
                series = band_series(curves, xs, by=by)
                pts = [(x, b) for x, b in zip(xs, series) if b is not None]
                if not pts:
                    continue
                x = [p[0] for p in pts]
                ax.step(
                    x,
                    [p[1][0] for p in pts],
                    where="post",
                    color=color,
                    lw=1.0,
                    label=f"{label} (n={len(curves)})" if ax is axes[0] else None,
                )
                if len(curves) > 1:
                    ax.fill_between(
                        x, [p[1][1] for p in pts], [p[1][2] for p in pts], step="post", color=color, alpha=0.2, lw=0
                    )
        if hline is not None:
            for ax in axes:
                ax.axhline(hline[0], color="black", ls="--", lw=0.7, label=hline[1] if ax is axes[0] else None)
        axes[0].set_xlabel("trainings")
        axes[1].set_xlabel("training seconds (summed)")
        axes[0].set_ylabel(ylabel or f"best {metric}" + (" %" if metric in PERCENT else "") + " so far")
        for ax in axes:
            ax.grid(True, lw=0.3, color="#e0e0e0")
            ax.set_axisbelow(True)
        axes[0].legend(fontsize=5.5, frameon=False, loc="lower right")
        if title:
            fig.suptitle(title)
        fig.set_layout_engine("constrained")
        return save_figure(fig, path)
