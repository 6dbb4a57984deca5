"""Sparsity methods for BN scale factors: original (subgradient) and proximal network slimming."""


def __getattr__(name: str):  # lazy re-export: ``edgeslim.sparsity.ProximalSlimming``
    if name in ("ProximalSlimming", "wrap"):
        from edgeslim.sparsity import prox

        return getattr(prox, name)
    raise AttributeError(f"module 'edgeslim.sparsity' has no attribute {name!r}")
