"""Model registry and the architecture spec stored in every checkpoint (timm-style)."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim.errors import EdgeslimError, Step, first_line

if TYPE_CHECKING:
    from torch import nn


#: the most classes a model spec may name (a probe's 2**40 failed to allocate the head)
MAX_CLASSES = 1_000_000


@dataclass
class ModelSpec:
    """Everything needed to rebuild an architecture (weights come from a state_dict).

    ``arch`` is a registry name (``vgg19``, ``resnet20``, ``tv:resnet18``, ...). ``num_classes``
    is ``None`` before building, for a family whose models keep their own count (a ``yolo:``
    yaml's ``nc``): :func:`build_model` fills it in from the built model; it stays None for a model
    of the user's whose count is unknown (no classifier: a detector, a segmenter). ``input_size`` is
    ``(H, W)``, or one number for a square image.
    """

    arch: str
    num_classes: int | None = 10
    in_channels: int = 3
    input_size: tuple[int, int] = (32, 32)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.input_size, int):  # one number: a square image, as timm's img_size
            self.input_size = (self.input_size, self.input_size)
        else:
            self.input_size = tuple(self.input_size)  # type: ignore[assignment]  (a list from JSON)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        try:
            classes = d.get("num_classes", 10)
            spec = cls(
                arch=str(d["arch"]),
                num_classes=None if classes is None else int(classes),
                in_channels=int(d.get("in_channels", 3)),
                input_size=tuple(int(v) for v in d.get("input_size", (32, 32))),  # type: ignore[arg-type]
                kwargs=dict(d.get("kwargs", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeslimError(f"invalid model spec {d!r:.200}: {exc}; re-create the checkpoint") from exc
        bad = [f"{k} {v}" for k, v, top in (("num_classes", spec.num_classes, MAX_CLASSES),
               ("in_channels", spec.in_channels, 4096)) if v is not None and not 1 <= v <= top]  # fmt: skip
        if bad or not all(1 <= s <= 65536 for s in spec.input_size):
            what = ", ".join(bad) or f"input_size {spec.input_size}"
            raise EdgeslimError(f"invalid model spec: {what} is out of range; re-create the checkpoint")
        return spec

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
#: families whose builder unpickles a file the user names (``pickle:PATH``): built only when trusted;
#: a callable decides per name (``yolo:best.pt`` unpickles, ``yolo:yolov8n`` does not)
_RUNS_CODE: dict[str, Callable[[str], bool | str]] = {}
#: prefix -> defaults(name): the ModelSpec fields a name is built with when the user gives none
_DEFAULTS: dict[str, Callable[[str], dict[str, Any]]] = {}
#: prefix -> classes_of(model, input_shape): the class count of a model built with ``num_classes=None``
#: (None: unknown, a model that is no classifier)
_CLASSES_OF: dict[str, Callable[[nn.Module, tuple[int, int, int]], int | None]] = {}
#: prefixes whose resolver takes ``probe_size`` (the ``(H, W)`` the model is built for, to run it on)
_SIZED: set[str] = set()


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
    runs_code: bool | Callable[[str], bool | str] = False,
    defaults: Callable[[str], dict[str, Any]] | None = None,
    classes_of: Callable[[nn.Module, tuple[int, int, int]], int | None] | None = None,
    sized: bool = False,
) -> None:
    """Register a family of names ``prefix:NAME`` resolved at call time (e.g. torchvision).

    ``runs_code``: building a name unpickles the file it names (it can run arbitrary code), so
    :func:`create_model` builds it only with ``trust_pickle=True``; a callable ``runs_code(NAME)``
    decides per name (a string it returns says how the name runs code, for the refusal).
    ``defaults(NAME)``: the :class:`ModelSpec` fields a name is built with when the user gives none (:func:`model_defaults`, e.g. its native ``input_size``); ``num_classes:
    None`` there means the model's own count, which ``classes_of(model, input_shape)`` reads back (None:
    unknown). ``sized``: the resolver also takes ``probe_size``, the ``(H, W)`` the model is built for."""
    _PREFIXES[prefix] = resolver
    (_SIZED.add if sized else _SIZED.discard)(prefix)
    _PREFIX_LISTERS[prefix] = lister
    for table, value in ((_DEFAULTS, defaults), (_CLASSES_OF, classes_of)):
        if value is None:
            table.pop(prefix, None)
        else:
            table[prefix] = value  # type: ignore[assignment]
    if runs_code is True:
        _RUNS_CODE[prefix] = lambda _name: True
    elif callable(runs_code):
        _RUNS_CODE[prefix] = runs_code
    else:
        _RUNS_CODE.pop(prefix, None)


def runs_code(arch: str) -> bool:
    """True when building ``arch`` unpickles a file (its family was registered with ``runs_code``)."""
    if ":" not in arch:
        return False
    prefix, name = arch.split(":", 1)
    return prefix in _RUNS_CODE and bool(_RUNS_CODE[prefix](name))


def source_file(arch: str) -> Path | None:
    """The file building ``arch`` reads (``pickle:PATH``, ``yolo:best.pt``, a yaml that names
    code), which a checkpoint of it needs where it names it; None for other architectures."""
    if not runs_code(arch):
        return None
    path = Path(arch.split(":", 1)[1]).expanduser()
    return path if path.is_file() else None


def canonical_arch(arch: str) -> str:
    """``arch`` as a checkpoint records it: a name that unpickles a file (``pickle:PATH``,
    ``yolo:best.pt``) names it by its absolute path, so the checkpoint rebuilds from any directory
    (as long as that file stays where it was)."""
    if not runs_code(arch):
        return arch
    prefix, name = arch.split(":", 1)
    return f"{prefix}:{Path(name).expanduser().resolve()}"


def model_defaults(arch: str) -> dict[str, Any]:
    """The :class:`ModelSpec` fields ``arch`` is built with when the user gives none: its family's
    (``yolo:``: ``input_size`` (640, 640) and ``num_classes`` None, the yaml's own; a ``tv:``
    segmenter: ``input_size`` (224, 224)); ``{}`` for the others, which take the ModelSpec defaults
    (10 classes, 32x32)."""
    if ":" not in arch:
        return {}
    prefix, name = arch.split(":", 1)
    fn = _DEFAULTS.get(prefix)
    if fn is None and _own_code(arch):  # the user's code: its own class count
        code_defaults = _CODE.get("defaults")
        return dict(code_defaults(arch)) if code_defaults is not None else {}
    return dict(fn(name)) if fn is not None else {}


def _own_code(arch: str) -> bool:
    """Whether ``arch`` names the user's code (``module:Attr``, no registered family)."""
    return arch.split(":", 1)[0] not in _PREFIXES and "build" in _CODE and is_code_reference(arch)


def check_trusted(arch: str, trust_pickle: bool) -> None:
    """Refuse ``arch`` when building it unpickles a file (``pickle:PATH``) and ``trust_pickle`` is off."""
    prefix, _, name = arch.partition(":")
    how = _RUNS_CODE[prefix](name) if name and prefix in _RUNS_CODE and not trust_pickle else False
    if how:  # asked once: a yolo: yaml is read to answer
        what = how if isinstance(how, str) else f"unpickles {name}"
        raise EdgeslimError(
            f"{arch} {what}, which can run arbitrary code; pass trust_pickle=True if you trust it",
            param="trust_pickle",
        )


#: for ``X:Y`` names whose prefix is no registered family (user code, ``module:Attr``): its resolver
#: (``build``) and, where registered, its ``defaults`` and ``classes_of`` (see :func:`register_code_resolver`)
_CODE: dict[str, Callable[..., Any]] = {}


def register_code_resolver(
    resolver: Callable[..., nn.Module],
    classes_of: Callable[[nn.Module, tuple[int, int, int]], int | None] | None = None,
    defaults: Callable[[str], dict[str, Any]] | None = None,
) -> None:
    """Register ``resolver(reference, num_classes, in_channels, probe_size, **kwargs)`` for
    ``module:Attr`` names (``probe_size``: the ``(H, W)`` the model is built for);
    ``defaults(reference)`` and ``classes_of(model)`` as :func:`register_prefix`'s (a ``num_classes``
    of None in the defaults: the code's own count, read back by ``classes_of``)."""
    _CODE.clear()
    _CODE.update(
        (k, f) for k, f in (("build", resolver), ("classes_of", classes_of), ("defaults", defaults)) if f
    )


@contextlib.contextmanager
def cwd_importable() -> Iterator[None]:
    """The current directory first on ``sys.path`` for the block, as ``python -m`` and ``python
    script.py`` have it: the ``edgeslim`` console script does not put it there, so ``cd mycode &&
    edgeslim info mynet:MyNet`` (or a whole pickle of a ``mynet`` class) could not import mynet.py.

    First, so that the user's ``models.py`` or ``utils.py`` wins over an installed package of that
    name, exactly as it would under ``python -m``; only for the block (importing the user's module or
    unpickling the user's model: code the user named or trusts), so that the imports edgeslim and
    torch make later (onnx, onnxruntime, ...) are never shadowed by a stray file in that directory.
    Modules imported in the block stay in ``sys.modules``, so the model keeps working after it.
    """
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        try:
            sys.path.remove(cwd)  # the first occurrence: the one inserted above
        except ValueError:  # the user's code removed it
            pass


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _family_hint(reference: str) -> tuple[str, str]:
    """For ``PREFIX:NAME`` whose PREFIX (one word) is no module: a clause naming the registered
    families, and ``family:NAME`` where a family's models include NAME (a review's
    tvseg:lraspp_mobilenet_v3_large: tv:lraspp_mobilenet_v3_large); ``("", "")`` otherwise."""
    prefix, _, name = reference.partition(":")
    families = [p for p in known_prefixes() if p in _PREFIX_LISTERS]
    if "." in prefix or not name or not families:
        return "", ""
    guess = ""
    for family in sorted(families, key=lambda p: p == "timm"):  # (timm's list takes seconds: last)
        try:
            names = _PREFIX_LISTERS[family]()
        except Exception:  # noqa: BLE001 - a family whose library is missing or broken lists nothing
            continue
        if name in names:
            guess = f"{family}:{name}"
            break
    known = ", ".join(f"{p}:" for p in families)
    return f", and {prefix}: is no model family (those are {known})", guess


def import_user_module(reference: str) -> Any:
    """Import the module of ``package.module:Attr`` (the current directory importable), with a
    one-line error that says whether the module itself is missing, something it imports is, or
    its code failed."""
    module_name = reference.split(":", 1)[0]
    try:
        with cwd_importable():
            return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            families, guess = _family_hint(reference)
            run = f"did you mean {guess}? Else, for your own code, run" if guess else "run"
            raise EdgeslimError(
                f"cannot import {module_name!r} for architecture {reference!r}: no {missing!r} in the "
                f"current directory ({os.getcwd()}) or on PYTHONPATH{families}; {run} from the directory that "
                f"holds {_top(missing)}.py (or the {_top(missing)}/ package) or add that directory to PYTHONPATH"
            ) from exc
        raise EdgeslimError(
            f"cannot import {module_name!r} for architecture {reference!r}: it imports {missing!r}, which "
            f"is not installed; install it (pip install {_top(missing)}) or fix the import"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the user's module code can raise anything
        first = next((s.strip() for s in str(exc).splitlines() if s.strip()), "")
        raise EdgeslimError(
            f"importing {module_name!r} for architecture {reference!r} failed "
            f"({type(exc).__name__}{': ' + first if first else ''}); fix that module"
        ) from exc


_MAIN_ATTR = re.compile(
    r"Can't get attribute '([^']+)' on <module '(?:[\w.]+\.)?__main__'"
)  # (python -m: pkg.__main__)
_MODULE_ATTR = re.compile(r"Can't get attribute '([^']+)' on <module '([^']+)'")


def explain_unpickling(what: str, exc: BaseException) -> EdgeslimError | None:
    """A one-line error for the usual reasons a whole pickled model cannot be loaded back (its class
    cannot be found: a module that is not importable, a class defined in a script's ``__main__`` or
    renamed), naming the fix; None for other failures. ``what`` names the file."""
    fallback = (
        "save model.state_dict() instead and load it with its architecture (module:Factory) and weights=FILE"
    )
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = _top(exc.name)
        return EdgeslimError(
            f"{what} pickles a model whose class lives in module {exc.name!r}, which cannot be imported "
            f"here; run from the directory that holds {top}.py (or the {top}/ package) or add that "
            f"directory to PYTHONPATH, or {fallback}",
            param="weights",
        )
    text = str(exc)
    m = _MAIN_ATTR.search(text)
    if isinstance(exc, AttributeError) and m:
        return EdgeslimError(
            f"{what} pickles class {m.group(1)!r}, which was defined in a script's __main__ and cannot be "
            "found again outside that script; move the class into a module (e.g. mynet.py), save "
            f"model.state_dict() and load it with the architecture mynet:{m.group(1)} and weights=FILE",
            param="weights",
        )
    m = _MODULE_ATTR.search(text)
    if isinstance(exc, AttributeError) and m:
        return EdgeslimError(
            f"{what} pickles class {m.group(1)!r}, which module {m.group(2)!r} no longer defines (renamed "
            f"or moved?); restore it, or {fallback}",
            param="weights",
        )
    return None


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


#: where every model name is listed (:func:`list_models`; ``edgeslim info --list-models``)
LIST_MODELS = Step("info", list_models=True, text="edgeslim.models.list_models()")


def create_model(spec: ModelSpec | str, *, trust_pickle: bool = False, **overrides: Any) -> nn.Module:
    """Build the architecture named by ``spec`` (random weights).

    A name that unpickles a file (``pickle:PATH``) is refused unless ``trust_pickle``. A spec whose
    ``num_classes`` is None builds the family's own count (see :func:`build_model`); a bare name
    takes its family's :func:`model_defaults` for what ``overrides`` leave out."""
    if isinstance(spec, str):
        spec = ModelSpec(arch=spec, **{**model_defaults(spec), **overrides})
    elif overrides:
        spec = ModelSpec.from_dict({**spec.to_dict(), **overrides})
    name = spec.arch
    check_trusted(name, trust_pickle)
    _check_kwargs(name, spec.kwargs)
    try:
        kw = dict(num_classes=spec.num_classes, in_channels=spec.in_channels, **spec.kwargs)
        return _create(name, kw, tuple(spec.input_size))  # type: ignore[arg-type]
    except TypeError as exc:  # (a checkpoint's spec naming an argument its architecture does not take)
        if not spec.kwargs or "keyword argument" not in str(exc):
            raise
        raise EdgeslimError(
            f"{name} does not take the model arguments {sorted(spec.kwargs)} ({first_line(exc)}); re-create the "
            "checkpoint"
        ) from exc


#: model arguments that load or download weights (timm's, torchvision's): never built from a spec, where
#: weights come from the checkpoint (a checkpoint's spec could name a file to load, or a download)
WEIGHT_ARGUMENTS = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                              "pretrained_backbone", "weights", "weights_backbone", "cache_dir"})  # fmt: skip


def _check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    bad = sorted(k for k, v in kwargs.items() if k in WEIGHT_ARGUMENTS and v not in (None, False))
    if bad:
        raise EdgeslimError(
            f"the model arguments of {name} name weights to load or download ({', '.join(bad)}); edgeslim builds "
            "an architecture with random weights and loads the checkpoint's own: re-create the checkpoint "
            "without them"
        )


def _create(name: str, kw: dict[str, Any], size: tuple[int, int]) -> nn.Module:
    if ":" in name:
        prefix, sub = name.split(":", 1)
        if prefix in _PREFIXES:
            return _PREFIXES[prefix](sub, **kw, **({"probe_size": size} if prefix in _SIZED else {}))
        if "build" in _CODE and is_code_reference(name):
            return _CODE["build"](name, **kw, probe_size=size)
        raise EdgeslimError(
            f"unknown model family {prefix!r} in {name!r}; known: {sorted(_PREFIXES)}, or package.module:Attr "
            "for your own code"
        )
    if name not in _MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise EdgeslimError(
            f"unknown architecture {name!r}; {hint}see {LIST_MODELS} for all names", steps=(LIST_MODELS,)
        )
    return _MODELS[name](**kw)


def build_model(spec: ModelSpec, *, trust_pickle: bool = False) -> tuple[nn.Module, ModelSpec]:
    """:func:`create_model`, and the spec that rebuilds the result: a ``num_classes`` of None (the
    architecture's own count, see :func:`model_defaults`) is replaced by the built model's (None
    where it is unknown: a model of the user's that is no classifier)."""
    model = create_model(spec, trust_pickle=trust_pickle)
    if spec.num_classes is None:
        fn = _CLASSES_OF.get(spec.arch.split(":", 1)[0]) if ":" in spec.arch else None
        if fn is None and _own_code(spec.arch):
            fn = _CODE.get("classes_of")
        if fn is None:
            raise EdgeslimError(
                f"give the number of classes of {spec.arch} (num_classes)", param="num_classes"
            )
        n = fn(model, spec.input_shape)
        spec = replace(spec, num_classes=None if n is None else int(n))
    return model, spec
