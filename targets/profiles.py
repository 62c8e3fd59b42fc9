"""Device profiles: what an embedded board can run, for `--device` and `edgec package`.

A profile says which targets run on the board (and which is the best default),
its CPU architecture and memory, how many onnxruntime threads to use, which
precisions its runtime accelerates, whether it has 2:4 sparse tensor cores,
how many DLA cores it has, and how much scratch memory a TensorRT build may
take there.

Figures are the boards' published specifications (NVIDIA's Jetson module data
sheets, Raspberry Pi's product brief) for the named configuration; a board
sold with more or less memory needs its own profile. Rules the fields keep:

- `supports_sparsity` only with compute capability 8.0 or newer: sparse tensor
  cores arrived with Ampere (Jetson Orin is sm_87; Xavier's Volta, sm_72, has none).
- `supports_fp16` / `supports_int8` mean "the board's runtime runs this faster
  than fp32": true for every Jetson GPU; on Arm/x86 CPUs with onnxruntime only
  int8 (U8S8 kernels; fp16 runs no faster on onnxruntime's CPU provider).
- `max_workspace_bytes` caps TensorRT's builder workspace at 1/8 of the
  board's memory, at most 4 GiB: Jetson memory is shared by CPU and GPU, and the
  application needs the rest. None where TensorRT does not run.
- `tensorrt` is among a board's targets only when its NVIDIA software can have
  TensorRT 10 or newer (`MIN_TENSORRT`), which edgec's tensorrt target needs:
  Jetson Orin with JetPack 6.1 or newer (TensorRT 10.3; JetPack 6.0 had 8.6)
  can; Jetson Xavier cannot — its last JetPack, 5.1, ships TensorRT 8.5 — so
  its profile offers cuda and cpu, and says so (`tensorrt_version`).
- `dla_cores` are the board's NVDLA engines. edgec reaches them only through
  the tensorrt target (TensorRT builds DLA engines), so on a board without it
  they are listed but unused. TensorRT reached DLA up to 10.7 (JetPack 6.1 has
  10.3) and again from 11.4.1 on JetPack 7.2.2+ (NVIDIA's "Working with DLA").

Defaults a profile sets for `edgec compile --device` (each overridable by a
flag or a config-file key): `target`, `precision`, `threads`, and budgets.
The budgets are a policy, not a specification, stated here so that it can be
argued with: the artifact file at most 1/16 of the board's memory
(`max_size_mb`; onnxruntime and TensorRT hold the weights more than once while
loading) and the inference process's peak memory at most 1/4 of it
(`max_memory_mb`; the application, the OS and, on Jetson, the GPU share the
rest). No profile sets `max_latency_ms`: edgec measures latency on the machine
that compiles, which is the board only when compiling on the board, and a
latency budget depends on the model; give `--max-latency-ms` yourself.
`precision` is int8 where the runtime has int8 kernels that beat fp32 (every
CPU board: onnxruntime's U8S8 kernels) and fp16 on Jetson GPUs (TensorRT and
CUDA run it natively, and it needs no representative calibration data to be
accurate).

Engines are specific to the GPU and TensorRT version that built them: an
engine for a board is built on the board (or an identical one); the profile
describes the board, it does not make the compiling machine into one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "ALIASES",
    "MIN_TENSORRT",
    "PROFILES",
    "DeviceProfile",
    "get_profile",
    "profile_names",
]

GiB = 1 << 30
_TARGETS = ("cpu", "cuda", "tensorrt")
_ARCHES = ("aarch64", "x86_64")
_PRECISIONS = ("fp32", "fp16", "int8")
MB = 1_000_000
#: the oldest TensorRT (major, minor) edgec's tensorrt target builds with
MIN_TENSORRT = (10, 0)


@dataclass(frozen=True)
class DeviceProfile:
    """One board. Immutable; derive a variant with `dataclasses.replace`.

    Attributes:
        name: the `--device` name.
        description: one line for `edgec package` and reports.
        target: the default target on this board.
        targets: every target that runs there (includes `target`).
        arch: CPU architecture, ``aarch64`` or ``x86_64``.
        memory_bytes: system memory (shared with the GPU on Jetson).
        threads: default onnxruntime intra-op threads (None: onnxruntime's default).
        supports_fp16, supports_int8: the runtime runs these precisions natively.
        supports_sparsity: 2:4 sparse tensor cores (Ampere or newer).
        gpu: GPU architecture and SM, e.g. ``Ampere sm_87``; None without a CUDA GPU.
        compute_capability: (major, minor) of that GPU.
        dla_cores: the board's NVDLA engines (used only by the tensorrt target).
        max_workspace_bytes: bound on TensorRT's builder workspace on this board.
        jetpack: the newest NVIDIA JetPack for the board, e.g. ``JetPack 6.1``; None off Jetson.
        tensorrt_version: (major, minor) of the TensorRT that JetPack ships; None when
            the board has no NVIDIA software stack of its own.
        precision: the default `--precision` on this board.
        max_size_mb, max_latency_ms, max_memory_mb: default budgets (10^6 bytes,
            milliseconds); None is not judged. See the module docstring.
        int8_saturates: the board's int8 kernels saturate 8-bit weights (x86 without
            VNNI): INT8 for it keeps weights to 7 bits (`QuantSpec.reduce_range`).
    """

    name: str
    description: str
    target: str
    targets: tuple[str, ...]
    arch: str
    memory_bytes: int
    threads: int | None
    supports_fp16: bool
    supports_int8: bool
    supports_sparsity: bool = False
    gpu: str | None = None
    compute_capability: tuple[int, int] | None = None
    dla_cores: int = 0
    max_workspace_bytes: int | None = None
    jetpack: str | None = None
    tensorrt_version: tuple[int, int] | None = None
    precision: str = "fp32"
    max_size_mb: float | None = None
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None
    #: x86 without VNNI: onnxruntime's u8s8 kernels (AVX2 vpmaddubsw) add two u8 x s8
    #: products in 16 bits with saturation, so INT8 weights are kept to 7 bits there
    int8_saturates: bool = False

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in _TARGETS]
        if unknown:
            raise ValueError(f"profile {self.name}: unknown targets {unknown}; known: {_TARGETS}")
        if self.target not in self.targets:
            raise ValueError(
                f"profile {self.name}: default target {self.target!r} not in {self.targets}"
            )
        if self.arch not in _ARCHES:
            raise ValueError(
                f"profile {self.name}: arch must be one of {_ARCHES}, got {self.arch!r}"
            )
        if self.memory_bytes <= 0:
            raise ValueError(f"profile {self.name}: memory_bytes must be positive")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"profile {self.name}: threads must be at least 1 or None")
        gpu_targets = {"cuda", "tensorrt"} & set(self.targets)
        if gpu_targets and self.compute_capability is None:
            raise ValueError(
                f"profile {self.name}: {sorted(gpu_targets)} need a compute_capability"
            )
        if self.supports_sparsity and (self.compute_capability or (0, 0)) < (8, 0):
            raise ValueError(
                f"profile {self.name}: 2:4 sparse tensor cores need compute capability 8.0 "
                f"(Ampere) or newer, got {self.compute_capability}"
            )
        if self.dla_cores < 0:
            raise ValueError(f"profile {self.name}: dla_cores must be >= 0")
        if self.dla_cores and self.compute_capability is None:
            raise ValueError(f"profile {self.name}: DLA cores come with an NVIDIA GPU (Jetson)")
        trt = self.tensorrt_version
        if "tensorrt" in self.targets and trt is not None and trt < MIN_TENSORRT:
            raise ValueError(
                f"profile {self.name}: the tensorrt target needs TensorRT "
                f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} or newer, the board ships {trt[0]}.{trt[1]}"
            )
        ws = self.max_workspace_bytes
        if ws is not None and not 0 < ws <= self.memory_bytes:
            raise ValueError(
                f"profile {self.name}: max_workspace_bytes must be in (0, memory_bytes]"
            )
        if self.precision not in _PRECISIONS:
            raise ValueError(
                f"profile {self.name}: precision must be one of {_PRECISIONS}, "
                f"got {self.precision!r}"
            )
        for budget in (self.max_size_mb, self.max_latency_ms, self.max_memory_mb):
            if budget is not None and not budget > 0:
                raise ValueError(f"profile {self.name}: budgets must be positive or None")

    def target_refusal(self, target: str) -> str | None:
        """Why `target` cannot run on this board (one line that says what to do), or None."""
        if target in self.targets:
            return None
        if target == "tensorrt" and self.tensorrt_version is not None:
            major, minor = self.tensorrt_version
            return (
                f"device {self.name} cannot have TensorRT 10 or newer: its NVIDIA software "
                f"({self.jetpack or 'its BSP'}) ships TensorRT {major}.{minor}, and edgec's "
                f"tensorrt target needs 10 or 11; choose --target {self.target}"
            )
        why = "has no CUDA GPU" if self.compute_capability is None else "cannot run it"
        return (
            f"device {self.name} {why} for --target {target} (its targets: "
            f"{', '.join(self.targets)}); choose --target {self.target}"
        )

    def precision_refusal(self, precision: str) -> str | None:
        """Why `precision` is no use on this board (fp16/int8 its runtime does not run
        faster than fp32), or None; fp32 and auto always fit."""
        if precision == "fp16" and not self.supports_fp16:
            return (
                f"device {self.name} runs fp16 no faster than fp32 (onnxruntime's CPU provider "
                "has no fp16 kernels that win there); use --precision int8 or fp32"
            )
        if precision == "int8" and not self.supports_int8:
            return f"device {self.name} has no int8 kernels; use --precision fp32 or fp16"
        return None

    def budgets(self) -> dict[str, float]:
        """The budgets this profile sets, by `--max-*` name (with underscores)."""
        named = {
            "max_size_mb": self.max_size_mb,
            "max_latency_ms": self.max_latency_ms,
            "max_memory_mb": self.max_memory_mb,
        }
        return {k: v for k, v in named.items() if v is not None}

    def to_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        if self.compute_capability is not None:
            d["compute_capability"] = list(self.compute_capability)
        if self.tensorrt_version is not None:
            d["tensorrt_version"] = list(self.tensorrt_version)
        return d


def _workspace(memory_bytes: int) -> int:
    return min(memory_bytes // 8, 4 * GiB)


def _size_budget(memory_bytes: int) -> float:
    """A board's artifact-size budget, whole MB: 1/16 of its memory (module docstring)."""
    return float(memory_bytes // 16 // MB)


def _memory_budget(memory_bytes: int) -> float:
    """A board's peak-memory budget, whole MB: 1/4 of its memory (module docstring)."""
    return float(memory_bytes // 4 // MB)


def _jetson(
    name: str,
    description: str,
    *,
    memory_bytes: int,
    threads: int,
    gpu: str,
    compute_capability: tuple[int, int],
    dla_cores: int,
    jetpack: str,
    tensorrt_version: tuple[int, int],
) -> DeviceProfile:
    """A Jetson module: TensorRT by default where its JetPack has TensorRT 10+, CUDA and the CPU.

    fp16 and int8 run natively on every Jetson GPU; 2:4 sparse tensor cores come
    with compute capability 8.0 (Ampere); the builder workspace is `_workspace`.
    Without TensorRT 10+ the board's default target is cuda.
    """
    tensorrt = tensorrt_version >= MIN_TENSORRT
    return DeviceProfile(
        name=name,
        description=description,
        target="tensorrt" if tensorrt else "cuda",
        targets=("tensorrt", "cuda", "cpu") if tensorrt else ("cuda", "cpu"),
        arch="aarch64",
        memory_bytes=memory_bytes,
        threads=threads,
        supports_fp16=True,
        supports_int8=True,
        supports_sparsity=compute_capability >= (8, 0),
        gpu=gpu,
        compute_capability=compute_capability,
        dla_cores=dla_cores,
        max_workspace_bytes=_workspace(memory_bytes) if tensorrt else None,
        jetpack=jetpack,
        tensorrt_version=tensorrt_version,
        precision="fp16",
        max_size_mb=_size_budget(memory_bytes),
        max_memory_mb=_memory_budget(memory_bytes),
    )


def _cpu_board(
    name: str,
    description: str,
    *,
    arch: str,
    memory_bytes: int,
    threads: int | None,
    int8_saturates: bool = False,
) -> DeviceProfile:
    """A board without a CUDA GPU: onnxruntime on the CPU, int8 faster than fp32, fp16 not."""
    return DeviceProfile(
        int8_saturates=int8_saturates,
        name=name,
        description=description,
        target="cpu",
        targets=("cpu",),
        arch=arch,
        memory_bytes=memory_bytes,
        threads=threads,
        supports_fp16=False,
        supports_int8=True,
        precision="int8",
        max_size_mb=_size_budget(memory_bytes),
        max_memory_mb=_memory_budget(memory_bytes),
    )


_ALL = (
    _jetson(
        "jetson-orin-nano",
        "Jetson Orin Nano 8GB: 6-core Cortex-A78AE, 1024-core Ampere GPU, no DLA",
        memory_bytes=8 * GiB,
        threads=6,
        gpu="Ampere sm_87",
        compute_capability=(8, 7),
        dla_cores=0,
        jetpack="JetPack 6.1",
        tensorrt_version=(10, 3),
    ),
    _jetson(
        "jetson-orin-nx",
        "Jetson Orin NX 16GB: 8-core Cortex-A78AE, 1024-core Ampere GPU, 2 NVDLA v2",
        memory_bytes=16 * GiB,
        threads=8,
        gpu="Ampere sm_87",
        compute_capability=(8, 7),
        dla_cores=2,
        jetpack="JetPack 6.1",
        tensorrt_version=(10, 3),
    ),
    _jetson(
        "jetson-agx-orin",
        "Jetson AGX Orin 64GB: 12-core Cortex-A78AE, 2048-core Ampere GPU, 2 NVDLA v2",
        memory_bytes=64 * GiB,
        threads=12,
        gpu="Ampere sm_87",
        compute_capability=(8, 7),
        dla_cores=2,
        jetpack="JetPack 6.1",
        tensorrt_version=(10, 3),
    ),
    _jetson(
        "jetson-xavier-nx",
        "Jetson Xavier NX 8GB: 6-core Carmel, 384-core Volta GPU, 2 NVDLA; JetPack 5.1 "
        "(TensorRT 8.5): no TensorRT 10, so cuda and cpu only",
        memory_bytes=8 * GiB,
        threads=6,
        gpu="Volta sm_72",
        compute_capability=(7, 2),
        dla_cores=2,
        jetpack="JetPack 5.1",
        tensorrt_version=(8, 5),
    ),
    _cpu_board(
        "raspberry-pi-5",
        "Raspberry Pi 5 8GB: 4-core Cortex-A76 (BCM2712), no CUDA GPU",
        arch="aarch64",
        memory_bytes=8 * GiB,
        threads=4,
    ),
    _cpu_board(
        "x86-avx2",
        "a generic x86-64 CPU with AVX2 (no VNNI), onnxruntime on the CPU: 7-bit INT8 "
        "weights, since its 16-bit int8 dot products saturate",
        arch="x86_64",
        memory_bytes=16 * GiB,
        threads=None,
        int8_saturates=True,
    ),
    _cpu_board(
        "x86-avx512-vnni",
        "an x86-64 CPU with AVX-512 VNNI (Xeon Cascade Lake / Ice Lake or newer): int8 "
        "dot products in one instruction, onnxruntime on the CPU",
        arch="x86_64",
        memory_bytes=16 * GiB,
        threads=None,
    ),
)

#: older names that still resolve (the README once called the AGX Orin "jetson-orin-agx")
ALIASES: MappingProxyType[str, str] = MappingProxyType({"jetson-orin-agx": "jetson-agx-orin"})

PROFILES: MappingProxyType[str, DeviceProfile] = MappingProxyType({p.name: p for p in _ALL})


def profile_names() -> list[str]:
    return sorted(PROFILES)


def get_profile(name: str) -> DeviceProfile:
    """The profile called `name`; raises KeyError listing the known ones (as `get_target` does)."""
    try:
        return PROFILES[ALIASES.get(name, name)]
    except KeyError:
        raise KeyError(f"unknown device {name!r}; known: {', '.join(profile_names())}") from None
