"""Zero-cost proxies: scores of a network at initialisation, computed in a second or so, that
some papers find rank architectures like training does. Three of the standard ones, as their
papers define them (Abdelfattah et al., ICLR 2021, "Zero-Cost Proxies for Lightweight NAS"):

* ``synflow`` (Tanaka et al., NeurIPS 2020): every parameter replaced by its absolute value,
  an all-ones input, R = the sum of the outputs; score = sum over parameters of |theta * dR/dtheta|
  (in float64, as the reference implementation does, since the product overflows float32).
* ``grad_norm``: the sum over parameters of the L2 norm of the cross-entropy gradient on one
  minibatch.
* ``naswot`` (Mellor et al., ICML 2021): the binary code of every GELU's input (> 0) for each
  image of a minibatch; K[i, j] = units - Hamming(c_i, c_j); score = log |det K|.

Each is computed on the proxy model (the same transform the search trains) with a fixed seed,
on one batch of training images (synflow needs none).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F


def _init_model(layout, seed: int, num_classes: int):
    from funnelbench.models import build_model

    torch.manual_seed(seed)
    return build_model(layout, num_classes=num_classes)


def synflow(model) -> float:
    model = copy.deepcopy(model).double().train()
    with torch.no_grad():
        for p in model.state_dict().values():
            p.abs_()
    model.zero_grad()
    size = model.layout.image_size
    out = model(torch.ones(1, 3, size, size, dtype=torch.float64))
    torch.sum(out).backward()
    score = sum((p * p.grad).abs().sum().item() for p in model.parameters() if p.grad is not None)
    return float(score)


def grad_norm(model, x, y) -> float:
    model = copy.deepcopy(model).train()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return float(sum(p.grad.norm().item() for p in model.parameters() if p.grad is not None))


def naswot(model, x) -> float:
    model = copy.deepcopy(model).eval()
    codes = []

    def hook(module, inputs, output):
        codes.append((inputs[0].detach() > 0).reshape(inputs[0].shape[0], -1).float())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.GELU)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    c = torch.cat(codes, dim=1).double()
    k = c @ c.t() + (1 - c) @ (1 - c).t()  # units - Hamming distance
    sign, logdet = np.linalg.slogdet(k.numpy())
    return float(logdet) if sign > 0 else -math.inf


def scores(layout, x, y, *, seed: int = 0, num_classes: int = 10) -> dict:
    """Every score of ``layout`` (a proxy layout) at initialisation with ``seed``; ``x`` is a
    normalised float batch, ``y`` its labels. Also the seconds the three took."""
    import time

    started = time.perf_counter()
    model = _init_model(layout, seed, num_classes)
    out = {"synflow": synflow(model), "grad_norm": grad_norm(model, x, y), "naswot": naswot(model, x)}
    out["zero_cost_s"] = time.perf_counter() - started
    return out
