"""Prox operators of edgeslim.penalties against brute-force minimisation on a fine grid."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeslim.errors import EdgeslimError
from edgeslim.penalties import check_params, group_prox, parse_penalty, penalty, prox, threshold

GRID = torch.linspace(-8.0, 8.0, 160001, dtype=torch.float64)  # step 1e-4

CASES = [
    ("l1", {}),
    ("lp", {"p": 0.5}),
    ("lp", {"p": 2.0 / 3.0}),
    ("lp", {"p": 0.3}),
    ("lp", {"p": 0.75}),
    ("tl1", {"a": 0.3}),
    ("tl1", {"a": 1.0}),
    ("tl1", {"a": 4.0}),
    ("mcp", {"g": 1.5}),
    ("mcp", {"g": 3.0}),
    ("scad", {"l": 1.0, "a": 3.7}),
    ("scad", {"l": 0.4, "a": 2.5}),
]


def objective(name: str, z: torch.Tensor, x: float, tau: float, params: dict) -> torch.Tensor:
    return 0.5 * (z - x) ** 2 + tau * penalty(name, z, **params)


def brute_min(name: str, x: float, tau: float, params: dict) -> tuple[float, float]:
    obj = objective(name, GRID, x, tau, params)
    i = int(obj.argmin())
    return float(obj[i]), float(GRID[i])


def valid_tau(name: str, params: dict, tau: float) -> bool:
    if name == "mcp":
        return params["g"] > tau
    if name == "scad":
        return params["a"] > 1 + tau / params["l"]
    return True


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-6.0, 6.0), tau=st.floats(0.0, 1.2), case=st.sampled_from(CASES))
def test_prox_matches_brute_force(x: float, tau: float, case: tuple[str, dict]) -> None:
    name, params = case
    if not valid_tau(name, params, tau):
        with pytest.raises(EdgeslimError):
            prox(name, torch.tensor([x], dtype=torch.float64), tau, **params)
        return
    z = prox(name, torch.tensor([x], dtype=torch.float64), tau, **params)
    assert torch.isfinite(z).all()
    best, zbest = brute_min(name, x, tau, params)
    got = float(objective(name, z, x, tau, params))
    # The prox value is a global minimiser: its objective is no worse than the grid's best,
    # up to the grid resolution (quadratic in the step 1e-4).
    assert got <= best + 1e-7, (name, params, x, tau, float(z), zbest)
    # and it is the grid minimiser unless the minimum is (nearly) tied between two points
    others = objective(name, GRID, x, tau, params)
    near = GRID[others <= best + 1e-6]
    if float(near.max() - near.min()) < 1e-2:
        assert abs(float(z) - zbest) < 2e-3


@pytest.mark.parametrize("name,params", CASES)
def test_prox_vectorised_tensor_tau_and_threshold(name: str, params: dict) -> None:
    x = torch.linspace(-3, 3, 301, dtype=torch.float64)
    tau = torch.rand(301, dtype=torch.float64) * 0.3
    z = prox(name, x, tau, **params)
    zz = torch.cat([prox(name, x[i : i + 1], float(tau[i]), **params) for i in range(301)])
    torch.testing.assert_close(z, zz)
    # sign is kept, magnitude never grows (every r here is non-decreasing in |z|)
    assert bool((z * x >= 0).all()) and bool((z.abs() <= x.abs() + 1e-12).all())
    t = threshold(name, 0.2, **params)
    assert float(prox(name, torch.tensor([float(t) * 0.999], dtype=torch.float64), 0.2, **params)) == 0.0
    assert (
        float(prox(name, torch.tensor([float(t) * 1.01 + 1e-6], dtype=torch.float64), 0.2, **params)) != 0.0
    )


def test_lp_closed_forms_agree_with_newton() -> None:
    x = torch.linspace(-4, 4, 801, dtype=torch.float64)
    for p in (0.5, 2.0 / 3.0):
        closed = prox("lp", x, 0.4, p=p)
        newton = prox("lp", x, 0.4, p=p + 1e-13)  # not exactly p: takes the Newton path
        torch.testing.assert_close(closed, newton, atol=1e-9, rtol=1e-9)


def brute_group(name: str, v: torch.Tensor, tau: float, params: dict) -> float:
    """min over the radius rho >= 0 along v (the minimiser lies on that ray)."""
    rho = torch.linspace(0.0, 10.0, 100001, dtype=torch.float64)
    n = float(v.norm())
    obj = 0.5 * (rho - n) ** 2 + tau * penalty(name, rho, **params)
    return float(obj.min())


@settings(max_examples=40, deadline=None)
@given(
    v=st.lists(st.floats(-3, 3), min_size=1, max_size=4),
    tau=st.floats(0.0, 0.9),
    case=st.sampled_from(CASES),
)
def test_group_prox_matches_radius_brute_force(v: list[float], tau: float, case: tuple[str, dict]) -> None:
    name, params = case
    if not valid_tau(name, params, tau):
        return
    x = torch.tensor(v, dtype=torch.float64)
    z = group_prox("group-" + name, x, torch.zeros(len(v), dtype=torch.long), tau, **params)
    got = float(0.5 * ((z - x) ** 2).sum() + tau * penalty(name, z.norm().reshape(1), **params).sum())
    assert got <= brute_group(name, x, tau, params) + 1e-7
    if float(z.norm()) > 0:  # same direction as v
        assert math.isclose(float(z @ x), float(z.norm() * x.norm()), rel_tol=1e-9)


def test_group_prox_block_soft_threshold_and_singletons() -> None:
    x = torch.tensor([3.0, 4.0, 0.1, -0.1, 1.0], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1, 2])
    z = group_prox("group-l2", x, groups, 1.0)
    torch.testing.assert_close(z[:2], torch.tensor([2.4, 3.2], dtype=torch.float64))  # (1 - 1/5) v
    assert z[2:4].abs().sum() == 0 and z[4] == 0  # ||v|| <= tau: whole group to zero
    # singleton groups = the elementwise prox
    y = torch.randn(50, dtype=torch.float64)
    torch.testing.assert_close(
        group_prox("group-tl1", y, torch.arange(50), 0.3, a=1.0), prox("tl1", y, 0.3, a=1.0)
    )


def test_tl1_prox_in_float32_shrinks_like_float64_at_large_a() -> None:
    """API review (tl1_grow.py, tl1_loop.py): the closed form subtracted terms of size a, so in float32
    (every float32 model's xi) at a >> |y| it lost the shrink and could grow |y| (a = 1e4, tau = 1e-4:
    +3e-4; 2000 slimmer steps left the scales where they were while l1 shrank them by 0.17)."""
    y = torch.tensor([1e-3, 0.05, 0.3, 0.7, 1.0, 1.3, -0.4])
    for a in (1.0, 100.0, 1e4, 1e5):
        for tau in (1e-5, 1e-4, 1e-2):
            got = prox("tl1", y, tau, a=a)
            want = prox("tl1", y.double(), tau, a=a)
            assert bool((got.abs() <= y.abs()).all()), (a, tau)  # a prox never grows |y|
            torch.testing.assert_close(got.double(), want, atol=1e-3 * tau, rtol=1e-6)


def test_group_prox_tau_is_per_entry_unless_said_per_group() -> None:
    """API review (group_order.py): a tau tensor with as many values as groups was taken per group,
    so singleton groups numbered in another order than the entries (coupled groups found in
    execution order) got each other's per-channel weights. Per entry is now the default; per group
    is asked for with per_group=True; neither is guessed from the size."""
    x = torch.ones(4, dtype=torch.float64)
    groups = torch.tensor([2, 3, 0, 1])  # singletons, numbered in another order than the entries
    tau = torch.tensor([0.0, 0.0, 0.5, 0.5], dtype=torch.float64)  # per entry
    torch.testing.assert_close(group_prox("group-l1", x, groups, tau), 1 - tau)
    per_group = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)  # the same, by group id
    torch.testing.assert_close(group_prox("group-l1", x, groups, per_group, per_group=True), 1 - tau)
    with pytest.raises(EdgeslimError, match="one value per group"):
        group_prox("group-l1", x, torch.tensor([0, 0, 1, 1]), tau, per_group=True)
    with pytest.raises(EdgeslimError, match="one value per entry"):
        group_prox("group-l1", x, torch.tensor([0, 0, 1, 1]), per_group[:2])


@pytest.mark.parametrize(
    "name,params,tau,msg",
    [
        ("lp", {"p": 1.0}, None, "0 < p < 1"),
        ("lp", {"p": 0.0}, None, "0 < p < 1"),
        ("tl1", {"a": -1.0}, None, "a > 0"),
        ("mcp", {"g": 0.1}, 0.2, "g > tau"),
        ("scad", {"a": 1.05}, 0.1, "a > 1 + tau/l"),
        ("scad", {"l": 0.0}, None, "l > 0"),
        ("l1", {"p": 0.5}, None, "no parameter 'p'"),
        ("l1", {}, -0.1, "tau must be a number >= 0"),
        ("lp", {"p": "x"}, None, "not a number"),
    ],
)
def test_invalid_params_are_one_line_errors(name: str, params: dict, tau, msg: str) -> None:
    with pytest.raises(EdgeslimError, match=msg.replace("(", r"\(").replace("+", r"\+")) as info:
        check_params(name, tau, **params)
    assert "\n" not in str(info.value)


def test_unknown_penalty_names_the_choices() -> None:
    with pytest.raises(EdgeslimError, match="group-scad"):
        parse_penalty("l0")
    assert parse_penalty("group-l2") == ("l1", True)
    with pytest.raises(EdgeslimError, match="group_prox"):
        prox("group-l1", torch.zeros(2), 0.1)


def test_a_nan_tau_is_refused() -> None:
    """prox("l1", x, tau=nan) returned NaN everywhere without a word (a researcher's trial)."""
    with pytest.raises(EdgeslimError, match="tau must be a number >= 0"):
        prox("l1", torch.ones(3), float("nan"))
    with pytest.raises(EdgeslimError, match="tau must be a number >= 0"):
        prox("scad", torch.ones(3), torch.tensor([0.1, float("nan"), 0.1]))


def test_a_penalty_name_without_a_formula_is_one_error(monkeypatch) -> None:
    """An extender added "l0" to PENALTIES (the docs' first step) and penalty("l0", x) raised KeyError 'l'
    from the SCAD formula it fell through to."""
    import torch

    from edgeslim import penalties
    from edgeslim.errors import EdgeslimError

    monkeypatch.setitem(penalties.PENALTIES, "l0", {})
    with pytest.raises(EdgeslimError, match="penalty 'l0' has no formula"):
        penalties.penalty("l0", torch.ones(3))
