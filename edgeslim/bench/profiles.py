"""Device profiles live in :mod:`edgeslim.channels.devices` (below sparsity and bench); re-exported."""

from edgeslim.channels.devices import (
    BACKENDS,
    PROFILE_DIR,
    DeviceProfile,
    Efficiency,
    PowerMode,
    Precision,
    Preferred,
    list_profiles,
    load_profile,
    parse_profile,
    profile_paths,
    user_profiles,
)

__all__ = [
    "Precision",
    "BACKENDS",
    "PROFILE_DIR",
    "PowerMode",
    "Efficiency",
    "Preferred",
    "DeviceProfile",
    "profile_paths",
    "parse_profile",
    "load_profile",
    "list_profiles",
    "user_profiles",
]
