"""The simulation under the estimate: the tensors of the forward pass (:class:`T`), what
autograd saves of them, each part's worst moments (:class:`PartMoments`), and from those the
peaks of the forward pass, the backward pass and the optimizer step (:func:`peaks`).

What a training step holds (``zero_grad(set_to_none=True)`` first, so no gradients exist
during the forward pass)::

    weights           4 bytes per parameter (fp32 master weights, also under autocast), and
                      the buffers (a sinusoid position table)
    optimizer state   AdamW: 2 x weights (+ one 4-byte step counter per tensor on CPU);
                      SGD with momentum: 1 x weights
    input batch       B x 3 x H x W x 4 bytes of images, B x 8 bytes of labels
    saved activations what autograd keeps from the forward pass for the backward pass
    gradients         4 bytes per parameter, appearing as the backward pass runs while the
                      saved activations are freed
    temporaries       gradients flowing backward; the optimizer's scratch (AdamW on CPU loops
                      over tensors: about 2 x the largest parameter; on CUDA it updates all
                      tensors at once: 1 x weights)

The peak is the largest of three moments: the end of the forward pass, the worst moment of
the backward pass (simulated part by part, last part first) and the optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass

F32 = 4
LABEL = 8  # int64 class labels


@dataclass
class T:
    """A tensor of the forward pass: a name (tensors saved by several operators count once),
    its bytes per element, its size in elements, and whether its memory is (B, C, N)-ordered."""

    name: str
    elem: int
    numel: int
    transposed: bool = False

    @property
    def bytes(self) -> int:
        return self.elem * self.numel


@dataclass
class PartMoments:
    """One part's worst moments, beyond the tensors it saved (which the walk holds by name)."""

    name: str
    params: int  # parameter count
    fwd_transient: int = 0  # bytes on top of everything saved so far, at its worst forward moment
    bwd_transient: int = 0  # bytes of gradients in flight at its worst backward moment
    infer_live: int = 0  # bytes of activations alive at its worst inference moment
    buffer_bytes: int = 0  # fixed tensors that are not parameters (counted with the weights)


class Walk:
    """Collects saved tensors (by name) and parts, in forward order."""

    def __init__(self, batch: int, amp_elem: int, device: str, attention: str):
        self.B = batch
        self.e = amp_elem  # bytes of a matmul output (4 without autocast)
        self.amp = amp_elem != F32
        self.device = device
        self.attention = attention
        self.saved: dict[str, list[int]] = {}  # name -> [bytes, index of the first part saving it]
        self.parts: list[PartMoments] = []
        self._n = 0

    def new(self, prefix: str, elem: int, numel: int, transposed: bool = False) -> T:
        self._n += 1
        return T(f"{prefix}#{self._n}", elem, numel, transposed)

    def save(self, t: T) -> None:
        if t.name not in self.saved:
            self.saved[t.name] = [t.bytes, len(self.parts)]

    def save_bytes(self, prefix: str, nbytes: int) -> None:
        self.save(self.new(prefix, 1, nbytes))

    def end_part(self, part: PartMoments) -> None:
        self.parts.append(part)

    # -- operators shared by the parts
    def linear_input(self, x: T) -> T:
        """The tensor a linear layer saves: its input, or the 2-byte copy autocast makes."""
        if self.amp and x.elem != self.e:
            return self.new("cast", self.e, x.numel)
        if x.transposed:  # a (B, C, N)-ordered input is copied to fold it into a matrix
            return self.new("contig", x.elem, x.numel)
        return x

    def weight_cast(self, numel: int) -> None:
        """Under autocast each linear/conv weight is cast once and kept for backward."""
        if self.amp:
            self.save_bytes("wcast", self.e * numel)

    def layer_norm(self, x: T, tokens: int) -> tuple[T, T]:
        """Save what LayerNorm keeps; return (its saved input, its output)."""
        if self.amp and self.device == "cuda" and x.elem != F32:  # CUDA autocast runs LayerNorm in fp32
            x = self.new("ln_in", F32, x.numel)
        self.save(x)
        self.save_bytes("ln_stats", 2 * F32 * self.B * tokens)
        return x, self.new("ln", x.elem, x.numel)


def chain_peak(chain: list[T]) -> int:
    """Bytes at the worst moment of a chain of operators each reading the previous one's
    output: an output and its input are alive together, then the input is dropped."""
    return max((a.bytes + b.bytes for a, b in zip(chain, chain[1:])), default=chain[0].bytes)


def adamw_cpu_scratch(sizes: list[int]) -> int:
    """torch's CPU AdamW loops over tensors: ``denom = (exp_avg_sq.sqrt() / c).add_(eps)`` holds
    two temporaries of the tensor being updated while the previous tensor's ``denom`` is still
    referenced (elements)."""
    return max(2 * n + (sizes[i - 1] if i else 0) for i, n in enumerate(sizes))


def peaks(w: Walk, base: int) -> tuple[list[int], int, int]:
    """(bytes saved by each part, forward peak, backward peak) on top of ``base`` (weights,
    buffers, optimizer state and the input batch)."""
    # Forward: everything saved so far plus the part's own transient.
    by_part = [0] * len(w.parts)
    for nbytes, first in w.saved.values():
        by_part[first] += nbytes
    fwd_peak, running = base, base
    for part, saved in zip(w.parts, by_part):
        running += saved
        fwd_peak = max(fwd_peak, running + part.fwd_transient)
    activations = sum(by_part)

    # Backward: last part first; a saved tensor is freed once the earliest part that saved it
    # is done, and each part's gradients appear as it finishes.
    free_after = [0] * len(w.parts)
    for nbytes, first in w.saved.values():
        free_after[first] += nbytes
    alive, grads_so_far = activations, 0
    bwd_peak = base
    for i in range(len(w.parts) - 1, -1, -1):
        part = w.parts[i]
        bwd_peak = max(bwd_peak, base + alive + grads_so_far + part.bwd_transient)
        grads_so_far += F32 * part.params
        alive -= free_after[i]
    bwd_peak = max(bwd_peak, base + grads_so_far)
    return by_part, fwd_peak, bwd_peak


def optimizer_bytes(sizes: list[int], optimizer: str, device: str) -> tuple[int, int]:
    """(state, scratch at the step) of ``optimizer`` for parameter tensors of ``sizes`` elements."""
    weights = F32 * sum(sizes)
    if optimizer == "sgd":  # momentum
        return weights, 0
    # AdamW: two moments, and on CPU a 4-byte step counter per tensor. torch's default AdamW
    # loops over tensors on CPU and updates all tensors at once on CUDA (one temporary per tensor).
    state = 2 * weights + (F32 * len(sizes) if device == "cpu" else 0)
    return state, F32 * adamw_cpu_scratch(sizes) if device == "cpu" else weights
