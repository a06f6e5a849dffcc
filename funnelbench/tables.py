"""Records for humans and machines: summaries of layouts and presets as flat dicts, and the
number formatting shared by every table. Units are in the field names (``params``, ``macs``);
``macs`` is the papers' "FLOPs" (one multiply-accumulate = 1), ``flops`` = 2 x ``macs``."""

from __future__ import annotations

from .cost import count
from .layout import Layout, stem_text
from .presets import PRESETS, list_presets, resolve

MACS_NOTE = 'MACs = multiply-accumulates, what the seed papers, DeiT and fvcore call "FLOPs"; FLOPs = 2 x MACs'


def human(n: float, unit: str = "") -> str:
    """86567656 -> '86.57 M'; 17563594752 -> '17.56 G'."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def layout_summary(x, num_classes: int = 1000) -> dict:
    """Everything ``funnelbench parse`` shows: the canonical layout, its input geometry, totals
    and one row per part (embedding, each stage including the transition into it, head)."""
    layout: Layout = resolve(x)
    cost = count(layout, num_classes=num_classes)
    parts = []
    for part in cost.parts:
        s = part.stage
        parts.append(
            {
                "part": part.name,
                "layers": s.layers if s else None,
                "tokens": s.tokens if s else None,
                "hidden": s.hidden if s else None,
                "mlp": s.mlp if s else None,
                "heads": s.heads if s else None,
                "pool": s.pool if s else None,
                "stride": s.stride if s else None,
                "pqo": s.pqo if s else None,
                "pool_in": s.pool_label if s else "-",
                "params": part.params,
                "macs": part.macs,
                "macs_share": part.macs / cost.macs,
            }
        )
    return {
        "layout": str(layout),
        "image_size": layout.image_size,
        "patch_size": layout.patch_size,
        "stem": stem_text(layout),
        "head": layout.head,
        "layers": layout.depth,
        "num_classes": num_classes,
        "params": cost.params,
        "macs": cost.macs,
        "flops": cost.flops,
        "parts": parts,
    }


def presets_summary(pattern: str = "*") -> list[dict]:
    """One flat record per preset matching ``pattern``: analytic counts next to the paper's."""
    rows = []
    for name in list_presets(pattern):
        preset = PRESETS[name]
        layout = resolve(name)
        cost = count(layout)
        rows.append(
            {
                "name": name,
                "layout": str(layout),
                "family": preset.family,
                "params": cost.params,
                "macs": cost.macs,
                "paper_params_m": preset.paper_params_m,
                "paper_gmacs": preset.paper_gmacs,
                "source": preset.source,
            }
        )
    return rows


# ----------------------------------------------------------------------------- profile records

MIB = 2**20
MEMORY_NOTE = (
    "peak memory = weights + gradients + optimizer state + batch + activations and temporaries at the "
    "worst moment of a step (CPU: live tensor bytes; CUDA: max_memory_allocated)"
)
TIMING_NOTE = "img/s and steps/s: median of the timed repeats after warm-up; ± = (slowest - fastest) / median"


def _round(x, digits: int = 1):
    return None if x is None else round(float(x), digits)


def _mib(x):
    return None if x is None else round(x / MIB, 1)


def _spread_pct(r: dict, prefix: str):
    lo, hi, med = r.get(f"{prefix}_step_ms_min"), r.get(f"{prefix}_step_ms_max"), r.get(f"{prefix}_step_ms")
    return None if not med or lo is None or hi is None else round(100 * (hi - lo) / med, 1)


def model_label(r: dict) -> str:
    """The preset name when the record was asked for by one, else the canonical layout."""
    return r["name"] if r.get("name") in PRESETS else r["layout"]


def profile_table(records: list[dict]) -> list[dict]:
    """Compact, rounded rows of profile records, in units people read (MiB, M, G): what the
    terminal table shows and what ``.md``/``.tex`` exports contain. Column names keep units."""
    with_baseline = any(r.get("baseline") for r in records)
    any_counters = any(r.get("torch_macs") is not None for r in records)
    any_error = any(r.get("error") for r in records)
    rows = []
    for r in records:
        row = {
            "model": model_label(r),
            "batch_size": r.get("batch_size"),
            "params_m": _round(r["params"] / 1e6, 2),
            "gmacs": _round(r["macs"] / 1e9, 3),
            "train_img_per_s": _round(r.get("train_img_per_s")),
            "train_spread_pct": _spread_pct(r, "train"),
            "infer_img_per_s": _round(r.get("infer_img_per_s")),
            "infer_spread_pct": _spread_pct(r, "infer"),
            "train_peak_mem_mib": _mib(r.get("train_peak_mem_bytes")),
            "train_mem_est_mib": _mib(r.get("train_mem_est_bytes")),
            "infer_peak_mem_mib": _mib(r.get("infer_peak_mem_bytes")),
            "infer_mem_est_mib": _mib(r.get("infer_mem_est_bytes")),
            "attention_kernel": r.get("attention_kernel"),
        }
        if any_counters:
            row["fvcore_gmacs"] = _round((r.get("fvcore_macs") or 0) / 1e9, 3) if r.get("fvcore_macs") else None
            row["torch_gmacs"] = _round((r.get("torch_macs") or 0) / 1e9, 3) if r.get("torch_macs") else None
        if with_baseline:
            row.update(
                train_speedup_x=_round(r.get("train_speedup_x"), 2),
                mem_saved_pct=_round(r.get("mem_saved_pct")),
                mem_est_saved_pct=_round(r.get("mem_est_saved_pct")),
                macs_saved_pct=_round(r.get("macs_saved_pct")),
                macs_ratio_x=_round(r.get("macs_ratio_x"), 2),
            )
        if any_error:
            row["error"] = r.get("error")
        rows.append(row)
    return rows


def reproduce_table(rows: list[dict]) -> list[dict]:
    """Compact rows of ``reproduce`` records: the paper's ratios next to ours."""
    return [
        {
            "table": r["table"],
            "row": r["row"],
            "paper_mem_saved_pct": _round(r["paper_mem_saved_pct"]),
            "mem_saved_pct": _round(r.get("mem_saved_pct")),
            "mem_est_saved_pct": _round(r.get("mem_est_saved_pct")),
            "est_mem_saved_pct_at_paper_batch": _round(r.get("est_mem_saved_pct_at_paper_batch")),
            "paper_speedup_x": _round(r["paper_speedup_x"], 2),
            "train_speedup_x": _round(r.get("train_speedup_x"), 2),
            "macs_ratio_x": _round(r.get("macs_ratio_x"), 2),
            "train_peak_mem_mib": _mib(r.get("train_peak_mem_bytes")),
            "train_steps_per_s": _round(r.get("train_steps_per_s"), 3),
            **({"error": r.get("error")} if any(x.get("error") for x in rows) else {}),
        }
        for r in rows
    ]
