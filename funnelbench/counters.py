"""Independent operation counters run on a built model, to cross-check :func:`funnelbench.count`.

* fvcore's ``FlopCountAnalysis`` counts MACs (it calls them flops) by JIT tracing. It has no
  handle for ``aten::scaled_dot_product_attention`` and silently counts it as zero (DeiT-S:
  4.25 G instead of 4.6 G); we register one. It also counts 5 operations per element for
  LayerNorm, which the analytic count leaves out (~0.2 % of a ViT), 1 per BatchNorm element
  and 4 per ``grid_sample`` output element (PS-ViT); ``convention_macs`` removes them all.
  Operators fvcore has no handle for and that carry no matrix product (``exp``, ``sum``,
  ``mul``, ``div``, ``im2col`` of ``nn.Unfold``, ``max_pool2d``, ...) are listed in
  ``skipped``; the analytic count leaves them out too.
* torch's ``FlopCounterMode`` counts FLOPs = 2 x MACs. In torch 2.14 it has no formula for
  the CPU flash-attention kernel, so fused attention counts zero on CPU; we run it with the
  math SDPA backend, which it does count (:func:`torch_flop_count`). It counts nothing for
  LayerNorm, so its count equals the analytic one exactly.

Operators a counter skipped are returned by name and count, never dropped silently.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class CounterResult:
    """What an external counter found for one forward pass of a batch of one image."""

    counter: str
    macs: int
    skipped: dict[str, int] = field(default_factory=dict)  # operator -> times it was not counted
    by_operator: dict[str, int] = field(default_factory=dict)  # operator -> MACs

    @property
    def flops(self) -> int:
        """2 x MACs."""
        return 2 * self.macs

    @property
    def macs_without_norms(self) -> int:
        """The count minus normalisation layers (LayerNorm, BatchNorm)."""
        return self.macs - sum(v for k, v in self.by_operator.items() if "norm" in k)

    @property
    def convention_macs(self) -> int:
        """The count minus every operator the analytic count leaves out by convention
        (:data:`NOT_MACS`: normalisation, bilinear sampling, upsampling, adaptive pooling)."""
        return self.macs - sum(v for k, v in self.by_operator.items() if any(word in k for word in NOT_MACS))


# fvcore operators that are not multiply-accumulates of a matrix product, which the analytic
# count (funnelbench.cost) leaves out: fvcore gives LayerNorm 5 and BatchNorm 1 operations per
# element, grid_sample 4 per output element (PS-ViT's bilinear sampling), upsampling and
# adaptive average pooling 1-4 per element.
NOT_MACS = ("norm", "grid_sampler", "upsample", "adaptive_avg_pool")


def _sdpa_macs(inputs, outputs) -> int:
    """fvcore handle: Q K^T and A V for q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(inputs[i]) for i in range(3))
    *batch, n, d = q
    m, dv = k[-2], v[-1]
    b = 1
    for x in batch:
        b *= x
    return b * n * m * d + b * n * m * dv


def fvcore_count(model: torch.nn.Module, image_size: int, in_chans: int = 3) -> CounterResult:
    """fvcore's MAC count of one image, with a handle for ``scaled_dot_product_attention``."""
    model = model.eval()
    x = torch.zeros(1, in_chans, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import and tracing warn that torch.jit is deprecated
        from fvcore.nn import FlopCountAnalysis

        logging.getLogger("fvcore").setLevel(logging.ERROR)
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        total = int(analysis.total())
        skipped = dict(analysis.unsupported_ops())
        by_operator = {k: int(v) for k, v in analysis.by_operator().items()}
    return CounterResult("fvcore", total, skipped, by_operator)


# Operators that only re-describe memory (views, layout): nothing to count, so not "skipped".
_NO_COMPUTE = {
    "view",
    "_unsafe_view",
    "reshape",
    "t",
    "transpose",
    "permute",
    "expand",
    "select",
    "slice",
    "unbind",
    "split",
    "split_with_sizes",
    "unsqueeze",
    "squeeze",
    "detach",
    "alias",
    "as_strided",
    "_reshape_alias",
    "lift_fresh",
    "empty",
    "empty_like",
    "empty_strided",
    "zeros",
    "zeros_like",
}


def torch_flop_count(
    model: torch.nn.Module, image_size: int, in_chans: int = 3, force_math: bool = True
) -> CounterResult:
    """torch ``FlopCounterMode``'s count of one image's forward pass, as MACs (FLOPs / 2).

    ``force_math`` runs attention through the math SDPA backend, whose matmuls the counter
    sees; without it, CPU flash attention counts zero in torch 2.14 and shows up in
    ``skipped``. ``skipped`` lists every operator that ran without a FLOP formula, except
    views and layout changes (LayerNorm, GELU, softmax, adds: zero in this convention too).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    from .measure import OpRecorder

    model = model.eval()
    x = torch.zeros(1, in_chans, image_size, image_size)
    counter = FlopCounterMode(display=False)
    ops = OpRecorder()
    backend = sdpa_kernel(SDPBackend.MATH) if force_math else contextlib.nullcontext()
    with backend, torch.no_grad(), counter, ops:
        model(x)
    counted = {
        str(k).removeprefix("aten."): int(v) // 2 for k, v in counter.get_flop_counts().get("Global", {}).items()
    }
    with_formula = {str(k).removeprefix("aten.") for k in flop_registry}
    skipped = {}
    for op, n in ops.ops.items():
        base = op.split(".")[0]
        if base not in with_formula and base not in _NO_COMPUTE:
            skipped[f"aten::{base}"] = skipped.get(f"aten::{base}", 0) + n
    return CounterResult("torch", int(counter.get_total_flops()) // 2, skipped, counted)


def format_skipped(skipped: dict[str, int]) -> str:
    """'aten::gelu x3, aten::native_layer_norm x8' (sorted by name), '' when nothing was skipped."""
    return ", ".join(f"{op} x{n}" for op, n in sorted(skipped.items()))
