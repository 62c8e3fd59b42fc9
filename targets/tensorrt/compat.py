"""Which TensorRT is here, what its Python bindings offer, and what to say when it is not usable.

edgec's tensorrt target runs on TensorRT 10.x and 11.x. Where the two differ,
the choice is made by what the installed bindings offer (`hasattr` on the
`tensorrt` module, its enums and its objects), never by the version number:

- strongly typed networks: `NetworkDefinitionCreationFlag.STRONGLY_TYPED` is
  passed to `create_network` where the bindings have it (10.x; 11.x still
  accepts it, "deprecated and ignored": every 11.x network is strongly typed);
  bindings without it have nothing else to ask for (`network_flags`);
- the engine inspector's execution context is `inspector.context` in 10.x and
  `inspector.execution_context` in 11.x (see `build.inspect_engine`).

The version number is read only to refuse TensorRT older than 10 with what to
install. `missing_api` lists the names edgec calls that the bindings lack, so
that a future release that drops one fails with a message, not an AttributeError.

Import failures are told apart (`import_problem`): no `tensorrt` package at all;
the Python package without its shared libraries (the bindings' `tensorrt.so`
links libnvinfer.so / libnvonnxparser.so, and the dynamic loader's ImportError
or OSError names the missing one); anything else. All are TargetUnavailable
(exit 5).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from types import ModuleType

from compiler.ground.errors import TargetUnavailable

__all__ = [
    "INSTALL_HINT",
    "MIN_MAJOR",
    "import_problem",
    "import_tensorrt",
    "installed_version",
    "missing_api",
    "network_flags",
    "require_api",
    "version_problem",
]

#: TensorRT majors before this are refused (weakly typed builds and binding indices).
MIN_MAJOR = 10

INSTALL_HINT = (
    "pip install tensorrt (10 or 11) and cuda-python — edgec's extra installs both: "
    "pip install '.[tensorrt]' — on a machine with an NVIDIA GPU, or use --target cuda or "
    "--target cpu"
)
_FALLBACK = "or use --target cuda or --target cpu"

# Distributions that install the `tensorrt` module, newest naming first.
_DISTRIBUTIONS = (
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt-cu13-bindings",
    "tensorrt-cu12-bindings",
)
_SHARED_LIBRARY = re.compile(r"[\w.+-]+\.(?:so(?:\.[\w.]+)?|dll|dylib)\b")

# What edgec calls on the `tensorrt` module and its enums: (owner, name). The
# per-object names (builder, config, engine, ...) are checked by
# tests/targets/tensorrt/test_api_names.py against NVIDIA's API reference.
_REQUIRED: tuple[tuple[str, str], ...] = (
    ("", "Builder"),
    ("", "OnnxParser"),
    ("", "Runtime"),
    ("", "ILogger"),
    ("", "nptype"),
    ("BuilderFlag", "SPARSE_WEIGHTS"),
    ("BuilderFlag", "TF32"),
    ("BuilderFlag", "GPU_FALLBACK"),
    ("MemoryPoolType", "WORKSPACE"),
    ("DeviceType", "DLA"),
    ("ProfilingVerbosity", "DETAILED"),
    ("LayerInformationFormat", "JSON"),
    ("TensorIOMode", "INPUT"),
)


def installed_version() -> str | None:
    """The version of the installed TensorRT distribution (without importing it), if any."""
    for dist in _DISTRIBUTIONS:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def import_problem(error: BaseException) -> str:
    """One line saying why `import tensorrt` failed with `error`, and what to do."""
    text = " ".join(str(error).split())
    if isinstance(error, ModuleNotFoundError) and error.name == "tensorrt":
        return f"TensorRT is not installed: {INSTALL_HINT}"
    if _SHARED_LIBRARY.search(text):
        version = installed_version()
        matching = f" (TensorRT {version})" if version else ""
        return (
            f"TensorRT's Python package is installed but its libraries are missing ({text}): "
            f"install the TensorRT libraries matching it{matching} — the tensorrt-cu12-libs or "
            "tensorrt-cu13-libs wheel of the same version, or NVIDIA's TensorRT packages — and "
            f"make them findable (LD_LIBRARY_PATH), {_FALLBACK}"
        )
    return f"TensorRT is installed but cannot be imported ({text}); reinstall it: {INSTALL_HINT}"


def import_tensorrt() -> ModuleType:
    """`import tensorrt`, or TargetUnavailable saying what is missing and what to install."""
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError) as e:  # OSError: ctypes loading the libraries by hand
        raise TargetUnavailable(import_problem(e)) from e


def _major(version: str) -> int | None:
    m = re.match(r"\s*(\d+)", version)
    return int(m.group(1)) if m else None


def version_problem(trt: ModuleType) -> str | None:
    """A one-line refusal when the imported TensorRT is older than 10 (or says no version)."""
    version = str(getattr(trt, "__version__", "") or "unknown")
    major = _major(version)
    if major is not None and major >= MIN_MAJOR:
        return None
    return (
        f"TensorRT {version} is installed; edgec's tensorrt target needs TensorRT 10 or 11 "
        f"(strongly typed networks): pip install 'tensorrt>={MIN_MAJOR},<12' and a matching "
        f"cuda-python, {_FALLBACK}"
    )


def missing_api(trt: ModuleType) -> list[str]:
    """The module-level names edgec uses that these bindings lack (empty when all are there)."""
    missing = []
    for owner, name in _REQUIRED:
        holder = getattr(trt, owner, None) if owner else trt
        if holder is None or not hasattr(holder, name):
            missing.append(f"{owner}.{name}" if owner else name)
    return missing


def require_api(trt: ModuleType) -> ModuleType:
    """`trt` itself when it is TensorRT 10+ with every name edgec uses; else TargetUnavailable."""
    problem = version_problem(trt)
    if problem is None:
        missing = missing_api(trt)
        if missing:
            problem = (
                f"TensorRT {getattr(trt, '__version__', '?')} lacks {', '.join(missing)}, which "
                "edgec's tensorrt target uses; install TensorRT 10 or 11 (pip install "
                "'.[tensorrt]')"
            )
    if problem:
        raise TargetUnavailable(problem)
    return trt


def network_flags(trt: ModuleType) -> int:
    """The `create_network` flags for a strongly typed network with these bindings.

    `1 << STRONGLY_TYPED` where the bindings offer the flag (TensorRT 10.x; 11.x
    ignores it), 0 where they do not (strong typing is then the only kind).
    """
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    flag = getattr(creation, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)
