"""Analytic memory of a training step and of inference, from a layout and a batch size alone.

No model is built: the estimate walks the layout part by part (the stem, the class token and
position embedding, each transformer layer, the transitions between stages, the head and the
loss) and adds up the tensors each operator keeps for backward, in bytes. That is what lets a
user size a batch for a GPU they do not have. ``tests/test_measure_memory.py`` checks the
activations saved at the end of the forward pass byte for byte against
:class:`funnelbench.measure.MemoryTracker`, and the peaks within a few percent, on CPU. The
CUDA rules (in ``walk`` and ``backbone``) are derived from torch's CUDA code and those CPU measurements; only
``tests/test_cuda.py`` (``pytest -m cuda``, on a GPU) compares them with measured CUDA peaks.

Modelled: the patch stem, the Transformer- and Performer-kind T2T stems and the
progressive-sampling stem (those three in fp32 only: under autocast the estimate refuses);
class-token and average heads; learned, fixed (sincos) or no position embedding; qkv bias or
none; mean/max pools, 1D or 2D, with window = stride or an explicit window (HVT);
pool-query-only attention; new position embeddings after a pool; width projections.

Not modelled: kernel scratch memory that is not a tensor (e.g. inside flash attention or a
convolution), the CUDA context and allocator rounding (512 B per block), cuBLAS and cuDNN
workspaces. Layouts with parts this module does not know (other stems, poolings or heads)
raise :class:`UnmodelledLayout` naming the part, rather than giving a wrong number.

The package, in the order a reader needs it:

    walk.py      the simulation: tensors of the forward pass, what autograd saves, each part's
                 worst moments, and from them the forward, backward and optimizer peaks
    backbone.py  class token and position embedding, transformer layer, transition, head and loss
    stems.py     patches, Tokens-to-Token (with the Performer layer), progressive sampling
    estimate.py  the public API: estimate_memory, max_batch_size, memory_records (the flat rows of
                 `funnelbench memory`), MemoryEstimate, what is modelled

All of them walk the parts of :func:`funnelbench.parts.describe`, the description that
``build_model`` and ``count`` read too.
"""

# Names the one-file module had imported, importable from here as before.
from ..cost import count, layer_params, t2t_layer_params, t2t_sides  # noqa: E402, F401
from ..errors import LayoutError, UsageError  # noqa: E402, F401
from ..layout import Layout, Stage, check_int, ps_feature_size, unfold_length, validate_layout  # noqa: E402, F401
from .estimate import (
    MAX_BUDGET_BYTES,
    MemoryEstimate,
    PartMemory,
    UnmodelledLayout,
    _param_sizes,
    check_modelled,
    estimate_memory,
    max_batch_size,
    memory_records,
    unmodelled_parts,
)
from .walk import F32, LABEL

__all__ = [
    "estimate_memory",
    "max_batch_size",
    "memory_records",
    "MemoryEstimate",
    "PartMemory",
    "UnmodelledLayout",
    "unmodelled_parts",
    "check_modelled",
    "MAX_BUDGET_BYTES",
    "F32",
    "LABEL",
]
