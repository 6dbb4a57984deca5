"""The ``info`` stage: parameters, MACs (total and per layer) and BN scale statistics of a model."""

from __future__ import annotations

from typing import Any


def resolve(target: str, data: str | None, input_shape: Any, num_classes: int | None,
            trust_pickle: bool, weights: Any = None,
            data_dir: Any = None) -> tuple[Any, dict[str, Any], tuple[int, ...]]:  # fmt: skip
    """(model, description, input shape) for a model file or an architecture name. A data set
    whose shape is only known from its files (``imagefolder`` in ``data_dir``) is opened for it:
    its image size and its number of classes."""
    from edgeslim.checkpoint import looks_like_file
    from edgeslim.pipelines.source import data_input, load_model_or_arch, model_input_shape

    if data_dir is not None and data is None:
        from edgeslim.errors import EdgeslimError

        raise EdgeslimError(
            "data_dir without data: name the data set of that folder (imagefolder)",
            param=("data_dir", "data"),
        )
    if data is not None and data_dir is not None:
        from edgeslim.data import dataset_shape

        if dataset_shape(data) is None:  # known from its files only: one image per split is read
            shape, classes = data_input(data, data_dir) or (None, None)
            input_shape = input_shape if input_shape is not None else shape
            if num_classes is None and weights is None and not looks_like_file(target):  # (a file, weights:
                num_classes = classes  # their own head)

    loaded = load_model_or_arch(
        target, trust_pickle=trust_pickle, input_shape=input_shape, data=data, num_classes=num_classes,
        weights=weights,
    )  # fmt: skip
    if loaded.path is None or loaded.kind == "architecture+weights":
        desc: dict[str, Any] = {"model": target, "kind": loaded.kind, "num_classes": loaded.spec.num_classes}
    else:
        desc = {"model": str(loaded.path), "kind": loaded.kind}
        if loaded.spec is not None:
            desc["arch"] = loaded.spec.arch
            desc["pruned"] = bool(loaded.recipe)
        desc.update({k: v for k, v in loaded.meta.items() if isinstance(v, (int, float, str, bool))})
        # the input normalization it takes (lists: what a device's preprocessing must do)
        if all(isinstance(loaded.meta.get(k), (list, tuple)) for k in ("mean", "std")):
            desc.update({k: [float(v) for v in loaded.meta[k]] for k in ("mean", "std")})
        # a training checkpoint's last epoch (test_acc, test_loss, epoch)
        metrics = loaded.meta.get("metrics")
        if isinstance(metrics, dict):
            desc["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
    from edgeslim.models import yolo

    if yolo.is_ultralytics_model(loaded.model):  # what to check before an export: its task and classes
        desc.update(yolo.task_and_names(loaded.model))
    return loaded.model, desc, model_input_shape(loaded, input_shape, data, data_option=True)


def info(target: str, data: str | None = None, input_shape: Any = None, num_classes: int | None = None,
         trust_pickle: bool = False, counter: str = "auto", weights: Any = None,
         data_dir: Any = None) -> dict[str, Any]:  # fmt: skip
    """Everything ``edgeslim info`` shows, as a JSON-able dict (model description, counts, BN stats)."""
    from edgeslim.pipelines.source import refuse_not_pytorch

    refuse_not_pytorch(target)  # (before torch is imported)
    from edgeslim.counting import bn_stats, count_model

    model, desc, shape = resolve(target, data, input_shape, num_classes, trust_pickle, weights, data_dir)
    stats = count_model(model, shape, counter=counter)
    return {**desc, **stats.to_dict(), "bn": bn_stats(model).to_dict()}
