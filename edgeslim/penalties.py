"""Sparsity penalties r(z) and their proximal operators (elementwise and over channel groups).

``prox(name, x, tau, **params)`` returns, elementwise, ``argmin_z 0.5*(z - x)**2 + tau*r(z)``:

========  ==========================================================  =====================
name      r(z)                                                        params
========  ==========================================================  =====================
``l1``    ``|z|``                                                     none
``lp``    ``|z|**p``                                                  ``p`` in (0, 1)
``tl1``   ``(a+1)|z| / (a+|z|)``                                      ``a > 0``
``mcp``   ``|z| - z**2/(2g)`` if ``|z| <= g`` else ``g/2``            ``g > tau``
``scad``  ``|z|`` / ``(2al|z| - z**2 - l**2)/(2(a-1)l)`` / ``(a+1)l/2``  ``l > 0``, ``a > 1 + tau/l``
========  ==========================================================  =====================

``tau`` may be a float or a tensor broadcastable to ``x`` (per-channel weights). The group
version, :func:`group_prox`, applies ``prox_{tau r}(||v||) * v/||v||`` to every group ``v``
of coupled entries (``group-l1`` is the group-l2 norm / block soft threshold). At a tie
between zero and a nonzero minimiser the operators return zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from edgeslim.errors import EdgeslimError

__all__ = [
    "PENALTIES",
    "check_params",
    "group_prox",
    "parse_penalty",
    "penalty",
    "prox",
    "threshold",
]

#: name -> default parameters
PENALTIES: dict[str, dict[str, float]] = {
    "l1": {},
    "lp": {"p": 0.5},
    "tl1": {"a": 1.0},
    "mcp": {"g": 3.0},
    "scad": {"l": 1.0, "a": 3.7},
}

#: Newton iterations for general l_p (monotone convergence from the right; 40 is ample in float64)
LP_NEWTON_STEPS = 40


def _tau_max(tau: float | Tensor) -> float:
    return float(tau.max()) if isinstance(tau, Tensor) else float(tau)


def _tau_min(tau: float | Tensor) -> float:
    return float(tau.min()) if isinstance(tau, Tensor) else float(tau)


def parse_penalty(name: str) -> tuple[str, bool]:
    """``"group-scad"`` -> ``("scad", True)``; ``"group-l2"`` is an alias of ``"group-l1"``."""
    key = name.strip().lower()
    grouped = key.startswith("group-") or key.startswith("group_")
    base = key[6:] if grouped else key
    if grouped and base == "l2":
        base = "l1"
    if base not in PENALTIES:
        names = list(PENALTIES) + [f"group-{n}" for n in PENALTIES] + ["group-l2"]
        raise EdgeslimError(f"unknown penalty {name!r}; choose one of: {', '.join(names)}", param="penalty")
    return base, grouped


def check_params(name: str, tau: float | Tensor | None = None, **params: Any) -> dict[str, float]:
    """Validate the parameters of penalty ``name`` (defaults filled in); raise one clear line.

    With ``tau`` given, the conditions that involve it are checked too (mcp: ``g > tau``,
    scad: ``a > 1 + tau/l``); they make the prox single-valued.
    """
    base, _ = parse_penalty(name)
    defaults = PENALTIES[base]
    unknown = sorted(k for k, v in params.items() if k not in defaults and v is not None)
    if unknown:
        allowed = ", ".join(defaults) or "none"
        raise EdgeslimError(
            f"penalty {base!r} takes no parameter {unknown[0]!r} (its parameters: {allowed})",
            param=unknown[0],
        )
    out: dict[str, float] = {}
    for k, d in defaults.items():
        v = params.get(k)
        try:
            out[k] = float(d if v is None else v)
        except (TypeError, ValueError):
            raise EdgeslimError(f"penalty {base!r}: parameter {k}={v!r} is not a number", param=k) from None
        if not math.isfinite(out[k]):
            raise EdgeslimError(f"penalty {base!r}: parameter {k}={v!r} must be finite", param=k)
    if tau is not None and not _tau_min(tau) >= 0:  # (NaN too: it made every output NaN without a word)
        raise EdgeslimError(
            "prox weight tau must be a number >= 0 (lambda and per-channel weights are non-negative)"
        )
    if base == "lp" and not 0.0 < out["p"] < 1.0:
        raise EdgeslimError(f"penalty 'lp' needs 0 < p < 1 (got p={out['p']}); use 'l1' for p = 1", param="p")
    if base == "tl1" and not out["a"] > 0:
        raise EdgeslimError(f"penalty 'tl1' needs a > 0 (got a={out['a']})", param="a")
    if base == "mcp":
        if not out["g"] > 0:
            raise EdgeslimError(f"penalty 'mcp' needs g > 0 (got g={out['g']})", param="g")
        if tau is not None and not out["g"] > _tau_max(tau):
            raise EdgeslimError(
                f"penalty 'mcp' needs g > tau, the prox threshold lambda / (1/lr + beta) (got g={out['g']}, "
                f"tau={_tau_max(tau):.4g}); raise g, or lower lambda (or the shrink)"
            )
    if base == "scad":
        if not out["l"] > 0:
            raise EdgeslimError(f"penalty 'scad' needs l > 0 (got l={out['l']})", param="l")
        if not out["a"] > 1:
            raise EdgeslimError(f"penalty 'scad' needs a > 1 (got a={out['a']})", param="a")
        if tau is not None and not out["a"] > 1 + _tau_max(tau) / out["l"]:
            raise EdgeslimError(
                f"penalty 'scad' needs a > 1 + tau/l, tau the prox threshold lambda / (1/lr + beta) (got "
                f"a={out['a']}, tau={_tau_max(tau):.4g}, l={out['l']}); raise a or l, or lower lambda (or the shrink)"
            )
    return out


# ----------------------------------------------------------------------------- r(z)


def penalty(name: str, z: Tensor, **params: Any) -> Tensor:
    """The penalty ``r(z)`` elementwise (for logging and brute-force checks)."""
    base, _ = parse_penalty(name)
    p = check_params(base, **params)
    a = z.abs()
    if base == "l1":
        return a
    if base == "lp":
        return a ** p["p"]
    if base == "tl1":
        return (p["a"] + 1) * a / (p["a"] + a)
    if base == "mcp":
        g = p["g"]
        return torch.where(a <= g, a - a * a / (2 * g), torch.full_like(a, g / 2))
    if base != "scad":  # (a name added to PENALTIES without its formula here)
        raise EdgeslimError(f"penalty {base!r} has no formula in edgeslim.penalties.penalty")
    lam, aa = p["l"], p["a"]
    mid = (2 * aa * lam * a - a * a - lam * lam) / (2 * (aa - 1) * lam)
    return torch.where(a <= lam, a, torch.where(a <= aa * lam, mid, torch.full_like(a, (aa + 1) * lam / 2)))


# ----------------------------------------------------------------------------- prox operators


def _as_tensor(tau: float | Tensor, like: Tensor) -> Tensor:
    return (
        tau.to(like)
        if isinstance(tau, Tensor)
        else torch.as_tensor(tau, dtype=like.dtype, device=like.device)
    )


def _prox_l1(y: Tensor, tau: Tensor) -> Tensor:
    return torch.sign(y) * torch.clamp(y.abs() - tau, min=0)


def _lp_threshold(tau: Tensor, p: float) -> Tensor:
    # b + tau*p*b^(p-1) with tau*b^(p-1) = b / (2(1-p)): no b^(p-1), which is inf when b
    # underflows to 0 for a tiny (subnormal) tau and would zero every input.
    b = (2 * tau * (1 - p)) ** (1 / (2 - p))
    return b * (2 - p) / (2 * (1 - p))


def _prox_lp(y: Tensor, tau: Tensor, p: float) -> Tensor:
    a = y.abs()
    thr = _lp_threshold(tau, p)
    keep = (a > thr) & (tau > 0)
    if p == 0.5:
        # Half thresholding (Xu et al. 2012) for 0.5(z-y)^2 + tau*|z|^(1/2).
        arg = torch.clamp((tau / 4) * (torch.clamp(a, min=1e-30) / 3) ** -1.5, -1.0, 1.0)
        phi = torch.arccos(arg)
        u = (2.0 / 3.0) * a * (1 + torch.cos(2 * math.pi / 3 - (2.0 / 3.0) * phi))
    elif abs(p - 2.0 / 3.0) < 1e-12:
        # l_{2/3} thresholding (Cao et al. 2013) for (z-y)^2 + L|z|^(2/3), L = 2 tau.
        lam = torch.clamp(2 * tau, min=1e-30)
        arg = torch.clamp((27.0 / 16.0) * a * a * lam**-1.5, min=1.0)
        theta = torch.arccosh(arg)
        big_a = (2 / math.sqrt(3)) * lam**0.25 * torch.sqrt(torch.cosh(theta / 3))
        inner = torch.clamp(2 * a / big_a - big_a * big_a, min=0)
        u = ((big_a + torch.sqrt(inner)) / 2) ** 3
    else:
        # Larger root of u + tau*p*u^(p-1) = |y|; Newton from the right converges monotonically
        # (the function is increasing and convex there).
        u = torch.maximum(a, thr)
        for _ in range(LP_NEWTON_STEPS):
            f = u + tau * p * u ** (p - 1) - torch.maximum(a, thr)
            df = 1 + tau * p * (p - 1) * u ** (p - 2)
            u = u - f / df
    return torch.where(keep, torch.sign(y) * u, torch.where(tau > 0, torch.zeros_like(y), y))


def _prox_tl1(y: Tensor, tau: Tensor, a: float) -> Tensor:
    # The closed form (2/3)(a+|y|) cos(phi/3) - 2a/3 + |y|/3, phi = arccos(1 - e), rewritten without
    # cancellation: |y| - (4/3)(a+|y|) sin^2(phi/6), phi = 2 arcsin(sqrt(e/2)). As written it subtracts
    # terms of size a, which in float32 at a >> |y| lost the shrink and could grow |y| (a = 1e4: +3e-4).
    ay = y.abs()
    thr = torch.where(tau <= a * a / (2 * (a + 1)), tau * (a + 1) / a, torch.sqrt(2 * tau * (a + 1)) - a / 2)
    s = a + ay
    e = 27 * tau * a * (a + 1) / (2 * s**3)
    phi = 2 * torch.arcsin(torch.sqrt(torch.clamp(e / 2, 0.0, 1.0)))
    u = ay - (4.0 / 3.0) * s * torch.sin(phi / 6) ** 2
    return torch.where(ay > thr, torch.sign(y) * u, torch.zeros_like(y))


def _prox_mcp(y: Tensor, tau: Tensor, g: float) -> Tensor:
    a = y.abs()
    mid = torch.sign(y) * torch.clamp(a - tau, min=0) / (1 - tau / g)
    return torch.where(a <= g, mid, y)


def _prox_scad(y: Tensor, tau: Tensor, lam: float, a: float) -> Tensor:
    ay = y.abs()
    soft = torch.sign(y) * torch.clamp(ay - tau, min=0)
    mid = ((a - 1) * y - torch.sign(y) * a * tau) / (a - 1 - tau / lam)
    return torch.where(ay <= lam + tau, soft, torch.where(ay <= a * lam, mid, y))


_PROX: dict[str, Callable[..., Tensor]] = {
    "l1": lambda y, t: _prox_l1(y, t),
    "lp": lambda y, t, p: _prox_lp(y, t, p),
    "tl1": lambda y, t, a: _prox_tl1(y, t, a),
    "mcp": lambda y, t, g: _prox_mcp(y, t, g),
    "scad": lambda y, t, lam, a: _prox_scad(y, t, lam, a),
}


def prox(name: str, x: Tensor, tau: float | Tensor, *, validate: bool = True, **params: Any) -> Tensor:
    """``argmin_z 0.5*(z - x)**2 + tau*r(z)`` elementwise, for the penalty ``name``.

    ``name`` is one of ``l1, lp, tl1, mcp, scad`` (a ``group-`` name is refused here: use
    :func:`group_prox`). ``validate=False`` skips the parameter checks (hot loops that
    checked once).
    """
    base, grouped = parse_penalty(name)
    if grouped:
        raise EdgeslimError(f"penalty {name!r} acts on channel groups; call group_prox(...) for it")
    p = check_params(base, tau, **params) if validate else {**PENALTIES[base], **params}
    t = _as_tensor(tau, x)
    return _PROX[base](x, t, *p.values())


def threshold(name: str, tau: float | Tensor, **params: Any) -> Tensor:
    """The largest ``|x|`` that ``prox`` maps to zero (where the operator jumps or starts)."""
    base, _ = parse_penalty(name)
    p = check_params(base, tau, **params)
    t = tau if isinstance(tau, Tensor) else torch.as_tensor(float(tau), dtype=torch.float64)
    if base == "lp":
        return _lp_threshold(t, p["p"])
    if base == "tl1":
        a = p["a"]
        return torch.where(t <= a * a / (2 * (a + 1)), t * (a + 1) / a, torch.sqrt(2 * t * (a + 1)) - a / 2)
    return t.clone()  # l1, mcp, scad: soft threshold at tau


def group_prox(
    name: str,
    x: Tensor,
    groups: Tensor,
    tau: float | Tensor,
    *,
    num_groups: int | None = None,
    per_group: bool = False,
    validate: bool = True,
    **params: Any,
) -> Tensor:
    """Group prox: every group ``v`` of entries becomes ``prox_{tau r}(||v||) * v / ||v||``.

    ``groups`` is a LongTensor with the group id (0..G-1) of every entry of the 1-D ``x``.
    A ``tau`` tensor is per entry (one value per entry of ``x``, averaged within each group),
    or with ``per_group=True`` per group (shape ``(G,)``, indexed by group id); its size is
    never used to guess which. Vectorised: two ``index_add_`` and one gather.
    """
    base, _ = parse_penalty(name)
    g = int(groups.max()) + 1 if num_groups is None else int(num_groups)
    sq = torch.zeros(g, dtype=x.dtype, device=x.device).index_add_(0, groups, x * x)
    norm = torch.sqrt(sq)
    tau_g: float | Tensor = tau
    if isinstance(tau, Tensor) and tau.dim() > 0:
        want, what = (g, "group (per_group=True)") if per_group else (x.numel(), "entry of x")
        if tau.numel() != want:
            raise EdgeslimError(f"group_prox needs tau with one value per {what}: {want}, got {tau.numel()}")
        if not per_group:
            counts = torch.zeros(g, dtype=x.dtype, device=x.device).index_add_(0, groups, torch.ones_like(x))
            tau_g = torch.zeros(g, dtype=x.dtype, device=x.device).index_add_(
                0, groups, tau.reshape(-1).to(x)
            ) / counts.clamp(min=1)
        else:
            tau_g = tau.reshape(-1)
    new = prox(base, norm, tau_g, validate=validate, **params)
    scale = torch.where(
        norm > 0, new / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(norm)
    )
    return x * scale[groups]
