"""`--device PROFILE`: a board's defaults for a compile, under config files and flags.

A device profile (`targets.profiles`) picks the target, the precision, the
onnxruntime threads and the budgets of a compile. They are defaults only: the
CLI puts `device_defaults(...)` first in `merge`'s base, so a config-file key
and then a flag override each one. The precision belongs to the profile's own
target: a run that moves to another target (`--device jetson-orin-nano
--target cpu`) keeps edgec's default precision unless one is given. After the
merge, `check_fits` refuses (exit 2) a target or precision the board cannot
use, with the profile's reason (Xavier's JetPack has no TensorRT 10).

Budgets the compile cannot judge would be left out with a note rather than
invented; every budget a profile carries today (size, memory) is judged.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from compiler.config import Budgets
from compiler.ground.errors import UsageError
from targets.profiles import ALIASES, PROFILES, DeviceProfile, get_profile

__all__ = [
    "DeviceDefaults",
    "check_fits",
    "device_defaults",
    "device_rows",
    "resolve_device",
    "under_device",
]


@dataclass(frozen=True)
class DeviceDefaults:
    """What a profile sets for a compile (`values`, CompileConfig/Budgets field names) and
    the budgets it has that this compile cannot judge (`unjudged`, one line each)."""

    profile: DeviceProfile
    values: dict[str, Any]
    unjudged: tuple[str, ...]


def resolve_device(name: str) -> DeviceProfile:
    """The profile called `name` (or an alias of it); UsageError listing the known ones."""
    try:
        return get_profile(name)
    except KeyError as e:
        raise UsageError(f"{e.args[0]} (see edgec devices)") from None


def device_defaults(name: str, target: str | None = None) -> DeviceDefaults:
    """The profile's compile defaults; `target` is the one the run will use when a config
    file or flag names it (then the profile's precision applies only if it is the profile's)."""
    profile = resolve_device(name)
    values: dict[str, Any] = {"target": profile.target}
    if target in (None, profile.target):
        values["precision"] = profile.precision
    if profile.threads is not None:
        values["threads"] = profile.threads
    judged = {f.name for f in fields(Budgets)}
    unjudged = []
    for key, limit in profile.budgets().items():
        if key in judged:
            values[key] = limit
        else:
            flag = "--" + key.replace("_", "-")
            unjudged.append(
                f"device {profile.name}'s {flag} {limit:g} is not judged: edgec's reports "
                "carry no measured peak memory yet"
            )
    return DeviceDefaults(profile, values, tuple(unjudged))


def under_device(
    base: dict[str, Any], flags: dict[str, Any]
) -> tuple[dict[str, Any], DeviceDefaults | None]:
    """`base` (config-file values) with the --device profile's defaults beneath it, and
    those defaults (None without a device). `flags` are the command line's values."""
    name = flags.get("device") or base.get("device")
    if not name:
        return base, None
    defaults = device_defaults(str(name), flags.get("target") or base.get("target"))
    return {**defaults.values, **base}, defaults


def check_fits(profile: DeviceProfile, target: str, precision: str) -> None:
    """Refuse (UsageError, exit 2) a target or precision the board cannot use, saying why."""
    reason = profile.target_refusal(target) or profile.precision_refusal(precision)
    if reason:
        raise UsageError(reason)


def device_rows() -> list[dict[str, Any]]:
    """One row per profile for `edgec devices`: what it picks, its budgets, short notes, and
    the full reason for each target it lacks (`refusals`)."""
    rows = []
    aliases = {canonical: alias for alias, canonical in ALIASES.items()}
    for name in sorted(PROFILES):
        p = PROFILES[name]
        lacking = [t for t in ("tensorrt", "cuda") if p.compute_capability and t not in p.targets]
        notes = [_short_note(p, t) for t in lacking]
        if name in aliases:
            notes.append(f"also called {aliases[name]}")
        rows.append(
            {
                "name": name,
                "description": p.description,
                "target": p.target,
                "targets": list(p.targets),
                "precision": p.precision,
                "threads": p.threads,
                "arch": p.arch,
                "memory_gib": p.memory_bytes / (1 << 30),
                "budgets": p.budgets(),
                "notes": notes,
                "refusals": {t: p.target_refusal(t) for t in lacking},
            }
        )
    return rows


def _short_note(p: DeviceProfile, target: str) -> str:
    """`no tensorrt: JetPack 5.1 ships TensorRT 8.5, edgec needs 10+` and the like."""
    if target == "tensorrt" and p.tensorrt_version is not None:
        major, minor = p.tensorrt_version
        return f"no tensorrt: {p.jetpack} ships TensorRT {major}.{minor}, edgec needs 10+"
    return f"no {target}"
