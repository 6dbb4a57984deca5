"""Channel-alignment audit: which Conv/Gemm layers have channel counts that tensor cores pad.

TensorRT's FP16 tensor-core layouts want channel counts that are multiples of 8, its INT8 kernels
multiples of 32 (NVIDIA/TensorRT#1310, #3876); ARM CPU kernels prefer multiples of 4 or 8.
Counts fixed by the data (image channels, number of classes) or by the architecture (a width with no
BatchNorm, which surgery cannot change) are listed but not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim.utils.onnx_graph import WEIGHT_OPS, node_module, weight_channels

if TYPE_CHECKING:
    import onnx
    from torch import nn

#: target -> channel multiple
TARGETS: dict[str, int] = {"fp16": 8, "int8": 32, "arm": 4}


@dataclass
class LayerChannels:
    name: str
    op: str
    in_channels: int
    out_channels: int
    groups: int = 1
    #: whether in/out counts are free (False for the image channels and the class count)
    in_free: bool = True
    out_free: bool = True
    #: the PyTorch module it computes (None: not known, e.g. a node of an ONNX file from elsewhere)
    module: str | None = None

    def misaligned(self, multiple: int) -> list[str]:
        """Which of ``in``/``out`` is free and not a multiple of ``multiple``."""
        bad = []
        if self.in_free and self.in_channels % multiple:
            bad.append("in")
        if self.out_free and self.out_channels % multiple:
            bad.append("out")
        return bad


@dataclass
class AlignmentReport:
    layers: list[LayerChannels]
    targets: dict[str, int] = field(default_factory=lambda: dict(TARGETS))
    #: the layers surgery narrowed (a slim model's recipe); None: unknown. A layer surgery left at its
    #: dense width is rounded by no re-run of surgery: only slimming aligned during training changes it
    narrowed: set[str] | None = None

    def misaligned(self, target: str) -> list[LayerChannels]:
        m = self.targets[target]
        return [lay for lay in self.layers if lay.misaligned(m)]

    @property
    def round_to(self) -> int | None:
        """The multiple to re-run channel surgery with (8 while FP16 is not aligned, else 32 for INT8),
        where a misaligned layer is one surgery cut (or may have: no recipe known); else None."""
        for t in ("fp16", "int8"):  # (FP16 first: its multiple divides INT8's)
            if any(self.narrowed is None or lay.module in self.narrowed for lay in self.misaligned(t)):
                return self.targets[t]
        return None

    def counts(self) -> str:
        """The misaligned layers per precision (``3/53 layers not a multiple of 8 (fp16); ...``), or ""."""
        parts = []
        for t in ("fp16", "int8"):
            bad = self.misaligned(t)
            if bad:
                parts.append(
                    f"{len(bad)}/{len(self.layers)} layers not a multiple of {self.targets[t]} ({t})"
                )
        return "; ".join(parts)

    def suggestion(self) -> str:
        """One line: what to re-run surgery with, or that everything is aligned."""
        counts = self.counts()
        if not counts:
            return "all free channel counts are multiples of 32 (aligned for FP16 and INT8 tensor cores)"
        t = "fp16" if self.misaligned("fp16") else "int8"
        bad = self.misaligned(t)
        dense = [lay for lay in bad if self.narrowed is not None and lay.module not in self.narrowed]
        fix = "" if t == "fp16" else "FP16 is aligned; "
        multiple = self.round_to  # (cut layers of the other precision count too)
        if multiple:
            fix += (
                ("if surgery cut it, " if self.narrowed is None else "")
                + ("re-run channel surgery rounding the kept channels to multiples of ")
                + ("8 (FP16) or 32 (INT8)" if multiple == 8 else "32")
            )
        if dense:
            fix += (", and " if multiple else "") + (
                f"{len(dense)} of them keep the architecture's dense width, which surgery leaves as it is: "
                "slimming aligned during training (a profile's alignment, round_to) narrows those"
            )
        return f"{counts}: TensorRT pads these and may add Reformat layers; {fix}"

    def rows(self) -> list[list[Any]]:
        """Table rows: layer, op, in, out, groups, fp16 flag, int8 flag."""
        out = []
        for lay in self.layers:
            flags = [
                "/".join(lay.misaligned(m)) or "ok" for m in (self.targets["fp16"], self.targets["int8"])
            ]
            out.append([lay.name, lay.op, lay.in_channels, lay.out_channels, lay.groups, *flags])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            "layers": [asdict(lay) for lay in self.layers],
            "misaligned": {t: [lay.name for lay in self.misaligned(t)] for t in self.targets},
            "suggestion": self.suggestion(),
            "counts": self.counts(),
            "round_to": self.round_to,
            "narrowed": None if self.narrowed is None else sorted(self.narrowed),
        }


def audit_onnx(
    model: onnx.ModelProto | str | Path, resizable: dict[str, tuple[bool, bool]] | None = None
) -> AlignmentReport:
    """Channel counts of every Conv / ConvTranspose / Gemm / MatMul with a constant weight.
    ``resizable``: module name -> whether surgery can change its (in, out) channel counts
    (:func:`edgeslim.channels.graph.resizable_layers`); a count it cannot change is the
    architecture's (a squeeze-excitation width, the insides of a module under a channel rule) and,
    like the image channels, not counted."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    g = model.graph
    shapes = {t.name: list(t.dims) for t in g.initializer}
    graph_inputs = {i.name for i in g.input}
    graph_outputs = {o.name for o in g.output}
    # Follow trivially shape-preserving nodes so "fed by the image" / "feeds the output" is found.
    passthrough = {"Relu", "Clip", "Identity", "Flatten", "Reshape", "Softmax", "BatchNormalization"}
    # towards the outputs also the decoding a detector's head does after its last convs
    to_output_ops = passthrough | {
        "Sigmoid",
        "Transpose",
        "Concat",
        "Split",
        "Slice",
        "Mul",
        "Add",
        "Sub",
        "Div",
    }
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def from_input(t: str) -> bool:
        while t not in graph_inputs:
            n = producer.get(t)
            if n is None or n.op_type not in passthrough:
                return False
            t = n.input[0]
        return True

    def to_output(t: str) -> bool:
        """Whether ``t`` reaches a graph output through ops without weights: its count is
        then fixed by the output (classes, a detector's box and class maps, its DFL bins)."""
        seen, todo = set(), [t]
        while todo:
            t = todo.pop()
            if t in graph_outputs:
                return True
            if t in seen:
                continue
            seen.add(t)
            todo += [o for n in consumers.get(t, []) if n.op_type in to_output_ops for o in n.output]
        return False

    free = resizable or {}
    layers = []
    for i, n in enumerate(g.node):
        if n.op_type not in WEIGHT_OPS or len(n.input) < 2:
            continue
        w = shapes.get(n.input[1])
        if w is None or len(w) < 2:
            continue
        cin, cout, groups = weight_channels(n, w)
        module = node_module(n)
        in_can, out_can = free.get(module or "", (True, True))
        layers.append(
            LayerChannels(
                name=n.name or f"{n.op_type}_{i}",
                op=n.op_type,
                in_channels=int(cin),
                out_channels=int(cout),
                groups=groups,
                in_free=in_can and not from_input(n.input[0]),
                out_free=out_can and not to_output(n.output[0]),
                module=module,
            )  # fmt: skip
        )
    return AlignmentReport(layers)


def audit_torch(model: nn.Module) -> AlignmentReport:
    """The same audit on a PyTorch model (Conv*d and Linear modules, in module order)."""
    from torch import nn

    from edgeslim.channels.ops import CONV_MODULES, CONV_TRANSPOSE_MODULES, LINEAR_MODULES

    kinds = (*CONV_MODULES, *CONV_TRANSPOSE_MODULES, *LINEAR_MODULES)
    mods = [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]
    layers = []
    for k, (name, m) in enumerate(mods):
        if isinstance(m, nn.Linear):
            cin, cout, groups, op = m.in_features, m.out_features, 1, "Linear"
        else:
            cin, cout, groups, op = m.in_channels, m.out_channels, m.groups, type(m).__name__
        layers.append(LayerChannels(name, op, cin, cout, groups, in_free=k > 0, out_free=k < len(mods) - 1,
                                    module=name))  # fmt: skip
    return AlignmentReport(layers)
