"""Device profiles: peak compute, memory bandwidth, power modes and preferred runtime per target.

The YAML files live in ``edgeslim/profiles/`` (shipped as package data; the repository's
top-level ``profiles/`` is a symbolic link to it). A profile can also be given as a path
to a user's own YAML file. :class:`DeviceProfile` is the schema; every number needs a source.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeslim.errors import EdgeslimError, Step, first_line
from edgeslim.utils.parsing import safe_yaml

Precision = Literal["fp32", "fp16", "int8"]
BACKENDS = ("onnxruntime", "tensorrt", "trtexec", "torch")
#: the backends that run TensorRT (they build at a precision; the others run a file as it is)
TENSORRT_BACKENDS = ("tensorrt", "trtexec")

#: where the shipped profiles live; EDGESLIM_PROFILES adds folders searched first
PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
#: the profile ``slim`` and ``prune`` round channel counts for when none is named (ONNX Runtime on the host CPU)
DEFAULT_PROFILE = "host-cpu"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PowerMode(_Strict):
    id: int | None = None
    name: str
    watts: float | None = Field(default=None, gt=0)
    default: bool = False


class Efficiency(_Strict):
    """Fraction of peak compute and bandwidth reached, plus a fixed per-layer overhead."""

    compute: float = Field(gt=0, le=1)
    memory: float = Field(gt=0, le=1)
    launch_us: float = Field(ge=0)
    source: str = "assumed"


class Preferred(_Strict):
    backend: Literal["onnxruntime", "tensorrt", "trtexec", "torch"]
    precision: Precision
    threads: int | None = Field(default=None, ge=1)
    providers: list[str] = []


class DeviceProfile(_Strict):
    """One target device. Compute peaks in GFLOP/s (GOP/s for int8), bandwidth in GB/s."""

    name: str
    title: str
    kind: Literal["jetson", "arm-board", "phone", "host"]
    peak_gflops: dict[Precision, float]
    memory_bandwidth_gbs: float = Field(gt=0)
    ram_gb: float = Field(gt=0)
    power_modes: list[PowerMode] = []
    preferred: Preferred
    efficiency: Efficiency
    efficiency_by_precision: dict[Precision, Efficiency] = {}
    #: channel counts the target's kernels reward, per precision (1: no preference)
    alignment: dict[Precision, int] = {}
    clock_setup: list[str] = []
    sources: dict[str, str]
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> DeviceProfile:
        if not self.peak_gflops or any(v <= 0 for v in self.peak_gflops.values()):
            raise ValueError("peak_gflops needs at least one positive entry")
        if self.preferred.precision not in self.peak_gflops:
            raise ValueError(f"preferred precision {self.preferred.precision} has no peak_gflops entry")
        needed = {"peak_gflops", "memory_bandwidth_gbs", "ram_gb", "efficiency"}
        missing = sorted(needed - set(self.sources))
        if missing:
            raise ValueError(f"sources must say where these come from: {', '.join(missing)}")
        if sum(m.default for m in self.power_modes) > 1:
            raise ValueError("at most one power mode can be the default")
        if any(v < 1 for v in self.alignment.values()):
            raise ValueError("alignment entries must be channel counts >= 1")
        if self.alignment and "alignment" not in self.sources:
            raise ValueError("sources must say where alignment comes from")
        return self

    def efficiency_for(self, precision: str) -> Efficiency:
        return self.efficiency_by_precision.get(precision, self.efficiency)  # type: ignore[arg-type]

    def channel_multiple(self, precision: str | None = None) -> int:
        """Channel count multiple this target's kernels run best at (``precision`` or the preferred one)."""
        return int(self.alignment.get(precision or self.preferred.precision, 1))  # type: ignore[call-overload]

    def ridge_point(self, precision: str | None = None) -> float:
        """FLOP per byte above which a layer is compute-bound."""
        prec = precision or self.preferred.precision
        return self.peak_gflops[prec] / self.memory_bandwidth_gbs  # type: ignore[index]


def _search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("EDGESLIM_PROFILES", "").split(os.pathsep) if p]
    return [*extra, PROFILE_DIR]


def _declared_name(path: Path) -> str:
    """The ``name:`` a profile file declares (its file stem where it has none or cannot be read:
    loading it then says why); each file read once while it is unchanged (every lookup reads the
    names of all profiles: 26 ms a lookup unremembered)."""
    try:
        st = path.stat()
    except OSError:
        return path.stem
    return _name_in_file(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=512)
def _name_in_file(path: str, _mtime_ns: int, _size: int) -> str:
    stem = Path(path).stem
    try:
        data = safe_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # (ValueError: not UTF-8; loading it says so)
        return stem
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else stem


def profile_paths() -> dict[str, Path]:
    """Profile name (the ``name:`` its file declares) -> path; a folder of ``EDGESLIM_PROFILES`` wins
    over the shipped profiles of the same name, and an earlier folder over a later one; two files of
    one folder declaring one name are refused (one line naming both)."""
    found: dict[str, Path] = {}
    for d in reversed(_search_dirs()):
        here: dict[str, Path] = {}
        for p in _profile_files(d):
            name = _declared_name(p)
            if name in here:
                raise EdgeslimError(
                    f"profiles {here[name]} and {p} both declare the name {name}; give one of them another name"
                )
            here[name] = p
        found.update(here)
    return dict(sorted(found.items()))


def _profile_files(folder: Path) -> list[Path]:
    found = [*folder.glob("*.yaml"), *folder.glob("*.yml")] if folder.is_dir() else []
    return sorted(p for p in found if p.is_file())  # (a FIFO named .yaml blocked every command reading it)


def user_profiles() -> list[tuple[str, Path, bool]]:
    """The profiles that come from ``EDGESLIM_PROFILES``: (name, path, whether it replaces a shipped
    profile of that name)."""
    shipped = {_declared_name(p) for p in _profile_files(PROFILE_DIR)}
    return [(n, p, n in shipped) for n, p in profile_paths().items() if p.parent != PROFILE_DIR]


def parse_profile(path: str | os.PathLike) -> DeviceProfile:
    """Read and validate one YAML file; one-line EdgeslimError on any problem."""
    p = Path(path)
    try:
        data = safe_yaml(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EdgeslimError(f"cannot read profile {p}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise EdgeslimError(f"profile {p} is not text (not UTF-8); fix or remove it") from None
    except yaml.YAMLError as exc:
        raise EdgeslimError(f"profile {p} is not valid YAML: {first_line(exc)}") from exc
    if not isinstance(data, dict):
        raise EdgeslimError(
            f"profile {p} must be a YAML mapping; see edgeslim/profiles/README.md for the fields"
        )
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise EdgeslimError(
            f"profile {p} does not validate: {where}: {e['msg']}{more}; fix the file (schema: docs/bench.md)"
        ) from exc


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """Load a profile by name (``jetson-orin-nano-super``) or by path to a YAML file."""
    s = str(name_or_path)
    if s.endswith((".yaml", ".yml")) or os.sep in s:
        if not Path(s).is_file():
            raise EdgeslimError(f"profile file {s} does not exist", param="profile")
        return parse_profile(s)
    paths = profile_paths()
    if s not in paths:  # (a file's stem: its name: is what lists and reports show; earlier folders win)
        stems = {p.stem: p for d in reversed(_search_dirs()) for p in _profile_files(d)}
        paths = {**stems, **paths}
    if s not in paths:
        import difflib

        close = difflib.get_close_matches(s, list(paths), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        listing = Step("profiles", text="edgeslim.channels.devices.list_profiles()")
        raise EdgeslimError(
            f"profile '{s}': no device profile has that name; {hint}list them with {listing}",
            param="profile",
            steps=(listing,),
        )
    return parse_profile(paths[s])


def list_profiles() -> list[DeviceProfile]:
    """All shipped (and EDGESLIM_PROFILES) profiles, validated."""
    return [parse_profile(p) for p in profile_paths().values()]


def resolve_alignment(
    round_to: int | None, profile: str | None, precision: str | None = None
) -> dict[str, object]:
    """The channel multiple to keep: ``round_to`` if given, else the profile's (default :data:`DEFAULT_PROFILE`).

    Returns ``{"round_to", "profile", "precision", "from"}`` for reports (``from``: ``round_to`` or ``profile``;
    with ``default_profile`` True where no profile was given).
    """
    prof = load_profile(profile or DEFAULT_PROFILE)
    prec = precision or prof.preferred.precision
    if round_to is not None:
        if round_to < 1:
            raise EdgeslimError(f"round_to must be >= 1, got {round_to}", param="round_to")
        return {"round_to": int(round_to), "profile": prof.name, "precision": prec, "from": "round_to"}
    if prof.alignment and prec not in prof.alignment:
        raise EdgeslimError(
            f"profile {prof.name} states no channel alignment for {prec} (it has {', '.join(prof.alignment)}); "
            "choose one of those precisions, or give round_to",
            param=("precision", "round_to"),
        )
    return {
        "round_to": prof.channel_multiple(prec),
        "profile": prof.name,
        "precision": prec,
        "from": "profile",
        "default_profile": not profile,  # (none given: the run says which it took)
    }
