"""The channel model: what every stage agrees on about a CNN's channels.

Below sparsity, surgery, train and bench (``docs/architecture.md``): the channel dependency
graph of a model, its coupled groups and which channels surgery can remove
(:mod:`~edgeslim.channels.graph`, with the op tables of :mod:`~edgeslim.channels.ops` and users'
rules in :mod:`~edgeslim.channels.rules`), the per-layer shrink and the recipe a slim model is
rebuilt from (:mod:`~edgeslim.channels.recipe`), which modules are normalization layers
(:mod:`~edgeslim.channels.norm`), the channel counts surgery keeps at a multiple
(:mod:`~edgeslim.channels.rounding`), the training-hook protocol and the
registry of training methods (:mod:`~edgeslim.channels.hooks`), and the cost model that
predicts latency from per-layer costs and a device profile (:mod:`~edgeslim.channels.cost`,
:mod:`~edgeslim.channels.devices`). This ``__init__`` imports nothing, so the torch-free
parts stay importable on a device without PyTorch.
"""
