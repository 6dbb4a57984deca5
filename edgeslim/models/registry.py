"""Model registry and the architecture spec stored in every checkpoint (timm-style)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from edgeslim.errors import EdgeslimError

if TYPE_CHECKING:
    from torch import nn


@dataclass
class ModelSpec:
    """Everything needed to rebuild an architecture (weights come from a state_dict).

    ``arch`` is a registry name (``vgg19``, ``resnet20``, ``tv:resnet18``, ...).
    """

    arch: str
    num_classes: int = 10
    in_channels: int = 3
    input_size: tuple[int, int] = (32, 32)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        try:
            return cls(
                arch=str(d["arch"]),
                num_classes=int(d.get("num_classes", 10)),
                in_channels=int(d.get("in_channels", 3)),
                input_size=tuple(int(v) for v in d.get("input_size", (32, 32))),  # type: ignore[arg-type]
                kwargs=dict(d.get("kwargs", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeslimError(f"invalid model spec {d!r}: {exc}; re-create the checkpoint") from exc

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image."""
        return (self.in_channels, *self.input_size)


ModelFn = Callable[..., "nn.Module"]

#: name -> constructor(num_classes=..., in_channels=..., **kwargs)
_MODELS: dict[str, ModelFn] = {}
#: prefix (e.g. "tv") -> resolver(name_without_prefix, num_classes, in_channels, **kwargs)
_PREFIXES: dict[str, Callable[..., nn.Module]] = {}
_PREFIX_LISTERS: dict[str, Callable[[], list[str]]] = {}
#: families whose builder unpickles a file the user names (``pickle:PATH``): built only when trusted
_RUNS_CODE: set[str] = set()


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    """Decorator: register ``fn(num_classes, in_channels, **kwargs) -> nn.Module`` as ``name``."""

    def deco(fn: ModelFn) -> ModelFn:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        return fn

    return deco


def register_prefix(
    prefix: str,
    resolver: Callable[..., nn.Module],
    lister: Callable[[], list[str]],
    *,
    runs_code: bool = False,
) -> None:
    """Register a family of names ``prefix:NAME`` resolved at call time (e.g. torchvision).

    ``runs_code``: building a name unpickles the file it names (it can run arbitrary code), so
    :func:`create_model` builds it only with ``trust_pickle=True``."""
    _PREFIXES[prefix] = resolver
    _PREFIX_LISTERS[prefix] = lister
    if runs_code:
        _RUNS_CODE.add(prefix)
    else:
        _RUNS_CODE.discard(prefix)


def runs_code(arch: str) -> bool:
    """True when building ``arch`` unpickles a file (its family was registered with ``runs_code``)."""
    return arch.split(":", 1)[0] in _RUNS_CODE if ":" in arch else False


def check_trusted(arch: str, trust_pickle: bool) -> None:
    """Refuse ``arch`` when building it unpickles a file (``pickle:PATH``) and ``trust_pickle`` is off."""
    if runs_code(arch) and not trust_pickle:
        raise EdgeslimError(
            f"{arch} unpickles {arch.split(':', 1)[1]}, which can run arbitrary code; pass trust_pickle=True "
            "if you trust it",
            param="trust_pickle",
        )


#: resolver for ``X:Y`` names whose prefix is no registered family (user code, ``module:Attr``)
_FALLBACK: list[Callable[..., nn.Module]] = []


def register_code_resolver(resolver: Callable[..., nn.Module]) -> None:
    """Register ``resolver(reference, num_classes, in_channels, **kwargs)`` for ``module:Attr`` names."""
    _FALLBACK[:] = [resolver]


def is_code_reference(arch: str) -> bool:
    """True for ``package.module:Attr`` names (a prefix that is no registered family)."""
    if ":" not in arch:
        return False
    prefix, attr = arch.split(":", 1)
    return prefix not in known_prefixes() and bool(attr) and all(p.isidentifier() for p in prefix.split("."))


def known_prefixes() -> list[str]:
    """Registered model families (``tv``, ``pickle``, ...)."""
    return sorted(_PREFIXES)


def list_models(include_prefixed: bool = True) -> list[str]:
    """All registered names; with ``include_prefixed`` also ``tv:...`` names."""
    names = sorted(_MODELS)
    if include_prefixed:
        for prefix, lister in sorted(_PREFIX_LISTERS.items()):
            names += [f"{prefix}:{n}" for n in lister()]
    return names


def create_model(spec: ModelSpec | str, *, trust_pickle: bool = False, **overrides: Any) -> nn.Module:
    """Build the architecture named by ``spec`` (random weights).

    A name that unpickles a file (``pickle:PATH``) is refused unless ``trust_pickle``."""
    if isinstance(spec, str):
        spec = ModelSpec(arch=spec, **overrides)
    elif overrides:
        spec = ModelSpec.from_dict({**spec.to_dict(), **overrides})
    name = spec.arch
    check_trusted(name, trust_pickle)
    kw = dict(num_classes=spec.num_classes, in_channels=spec.in_channels, **spec.kwargs)
    if ":" in name:
        prefix, sub = name.split(":", 1)
        if prefix in _PREFIXES:
            return _PREFIXES[prefix](sub, **kw)
        if _FALLBACK and is_code_reference(name):
            return _FALLBACK[0](name, **kw)
        raise EdgeslimError(
            f"unknown model family {prefix!r} in {name!r}; known: {sorted(_PREFIXES)}, or package.module:Attr "
            "for your own code"
        )
    if name not in _MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise EdgeslimError(
            f"unknown architecture {name!r}; {hint}see `edgeslim info --list-models` for all names"
        )
    return _MODELS[name](**kw)
