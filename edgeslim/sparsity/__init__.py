"""Sparsity methods for BN scale factors: original (subgradient) and proximal network slimming."""
