"""PyTorch eager backend: edgeslim model files via ``edgeslim.checkpoint.load_model``.

On CUDA, device time comes from CUDA events (recorded for every iteration, synchronised once)
and the allocator peak is recorded. Not for Jetson deployments (see notes §2.5).
"""

from __future__ import annotations

import os

from edgeslim.bench.backends import FORMAT_WORDS, Backend, Session, named_format, run_failed
from edgeslim.bench.timing import TimingConfig, host_loop, warmup
from edgeslim.errors import (
    EdgeslimError,
    MissingDependencyError,
    Step,
    cause_line,
    extra_of,
    install_hint,
    out_of_memory,
    require,
)


class TorchSession(Session):
    backend = "torch"

    def __init__(self, loaded, device: str, torch, input_shape: tuple[int, int, int] | None = None) -> None:
        self.torch = torch
        self.path = str(loaded.path)
        self.model = loaded.model
        steps = ((f"to({device!r})", lambda m: m.to(device)), ("eval()", lambda m: m.eval()))
        for call, step in steps:  # (the model's own methods: a class may override them)
            try:
                self.model = step(self.model)
            except Exception as exc:
                if out_of_memory(exc) or isinstance(exc, OSError):  # (the CLI's memory and file handling)
                    raise
                raise EdgeslimError(
                    f"{os.path.basename(self.path)}: the model's {call} fails ({type(exc).__name__}: "
                    f"{cause_line(exc)[:200]}); fix that method in the model's code"
                ) from exc
        self.batch: int | None = None
        self.ran: set[int] = set()  # the batches a forward ran at
        self.input_shape = tuple(input_shape) if input_shape else loaded.input_shape
        # a checkpoint saved in float64 loads so: timed in float32, as the slim one it is compared with, which
        # prune and slim write in float32 (a review: a 3.08x "speedup" at a MACs ratio of 1)
        if loaded.kind == "checkpoint":
            from edgeslim.models.user import in_float32

            in_float32(self.model, self.path, self.input_shape, quiet=True)
        self.device = torch.device(device)
        self.x = None
        self.dtype = next(
            (t.dtype for t in (*self.model.parameters(), *self.model.buffers()) if t.is_floating_point()),
            torch.float32,
        )
        self.cuda = self.device.type == "cuda"
        from edgeslim.models.yolo import check_input_size, deployed_output

        check_input_size(self.model, self.input_shape)

        # what the model returns deployed (an ultralytics YOLO's decoded predictions, not the neck
        # features it also returns in eval mode, which surgery resizes): what a baseline is checked by
        self.deployed = deployed_output(self.model)

    def set_batch(self, batch: int) -> None:
        if self.input_shape is None:
            raise EdgeslimError(
                "the model file records no input shape; give input_shape (C, H, W) in the options "
                "or save it as an edgeslim checkpoint",
                param="input_shape",
            )
        # (C, H, W), in the model's own dtype: a float16 pickle or TorchScript file takes float16
        self.x = self.torch.randn(batch, *self.input_shape, device=self.device, dtype=self.dtype)
        self.batch = batch
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def run(self):
        with self.torch.inference_mode():
            try:
                y = self.model(self.x)
            except EdgeslimError:  # the model's own one-line reason (a torch.export program's shape check)
                raise
            except Exception as exc:  # the model's own code, on the input it was given
                if out_of_memory(exc):  # (the measuring process says it as such)
                    raise
                raise self._failed(exc) from exc
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
        out = y if self.deployed is None else self.deployed(y)
        if self.batch not in self.ran:
            from edgeslim.channels.graph import flat_tensors

            if not flat_tensors(out):
                raise EdgeslimError(
                    f"{os.path.basename(self.path)}'s forward returns {type(out).__name__}, no tensor: bench "
                    "times a forward that returns its outputs as tensors (in a tuple, list or dict); return them"
                )
            self.ran.add(self.batch)
        return out

    def _failed(self, exc: Exception) -> EdgeslimError:
        """The one line for a forward that raised ``exc``: its input shape is wrong (it never ran), it does not
        run at this batch (it ran at another), or it fails on a later call (it ran at this batch)."""
        if not self.ran:
            fix, param = "give the input_shape (C,H,W) it takes", "input_shape"
        elif self.batch not in self.ran:
            at = ", ".join(map(str, sorted(self.ran)))
            fix, param = (
                f"the model does not run at batch {self.batch} (it ran at {at}): time it at a batch it runs at",
                None,
            )
        else:
            fix, param = (
                f"it ran at batch {self.batch} before: its forward fails on a later call; fix the model's code",
                None,
            )
        dtype = str(self.x.dtype).removeprefix("torch.")
        return run_failed(self.path, "torch", self.input_shapes(), dtype, exc, fix, param=param)

    def input_shapes(self) -> list[list[int]] | None:
        return None if self.x is None else [list(self.x.shape)]

    def measure(self, cfg: TimingConfig) -> dict[str, list[float]]:
        host = host_loop(self.run, cfg)
        if not self.cuda:
            return {"host": host}
        torch = self.torch
        warmup(self.run, cfg)
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in host]
        with torch.inference_mode():
            for a, b in ev:
                a.record()
                self.model(self.x)
                b.record()
        torch.cuda.synchronize(self.device)
        return {"host": host, "device": [a.elapsed_time(b) * 1e-3 for a, b in ev]}

    def info(self) -> dict:
        out = {
            "torch": self.torch.__version__,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),  # (of the weights and the random inputs)
            "params": int(sum(p.numel() for p in self.model.parameters())),
        }
        if str(self.device) == "cpu":  # the intra-op threads it ran on (given, or torch's default)
            out["threads"] = self.torch.get_num_threads()
        quantized = any(type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized"))
                        for m in self.model.modules())  # fmt: skip
        if self.input_shape is not None and not quantized:  # per sample, as an ONNX file's (the MAC ratio);
            # not a quantized model's: the counter misses its packed layers (a review: 194k of 266k MACs)
            from edgeslim.counting import count_model

            try:
                out["macs"] = count_model(self.model, self.input_shape, counter="flop_counter").macs
            except Exception:  # noqa: BLE001 - a model the counter cannot run is benched without its count
                pass
        if self.cuda:
            out["cuda_max_allocated_bytes"] = int(self.torch.cuda.max_memory_allocated(self.device))
            out["gpu"] = self.torch.cuda.get_device_name(self.device)
        return out


class TorchBackend(Backend):
    layer_table_producer = "edgeslim.bench.layers:torch_file_table"
    name = "torch"

    def open(self, path: str, options: dict) -> TorchSession:
        try:
            torch = require("torch", "for the torch backend")
        except MissingDependencyError as exc:  # a file named as another format says so first
            named = named_format(path)
            if named == "torch" or not os.path.isfile(path):
                raise
            raise MissingDependencyError(
                f"{path} is not {FORMAT_WORDS[named]} as its name says but a PyTorch file (a pickle or zip "
                f"archive), which only the torch backend runs, and torch is not installed here: give "
                f"{FORMAT_WORDS[named]} (the model's export) instead, or install torch: "
                f"{install_hint(extra_of('torch'))}"
            ) from exc
        if not os.path.isfile(path):
            raise EdgeslimError(f"model file {path} does not exist")
        from edgeslim.checkpoint import NoArchitecture, load_model

        if options.get("threads"):
            torch.set_num_threads(int(options["threads"]))
        device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EdgeslimError(f"device {device} requested but torch sees no CUDA device", param="device")
        try:
            loaded = load_model(path, trust_pickle=bool(options.get("trust_pickle")))
        except NoArchitecture as exc:  # weights alone: bench takes model files, export builds one
            arch = exc.arch or "ARCH"
            export = Step("export", model=arch, weights=path, num_classes=exc.num_classes,
                          onnx_path=f"{os.path.splitext(path)[0]}.onnx")  # fmt: skip
            which = {None: "ARCH: e.g. tv:resnet18", "yolo:YAML": "YAML: the ultralytics yaml it was built from, e.g. "
                     "yolov8n"}.get(exc.arch, f"{arch}: the one it records")  # fmt: skip
            raise EdgeslimError(
                f"{path} holds weights without their architecture, which bench cannot run; export them with the "
                f"architecture they were saved from ({export}; {which}) and bench the ONNX",
                steps=(export,),
            ) from exc
        return TorchSession(loaded, device, torch, options.get("input_shape"))
