"""Device profiles: the boards' facts and the rules the fields keep (pure Python)."""

from __future__ import annotations

import dataclasses

import pytest

from targets.profiles import MIN_TENSORRT, PROFILES, DeviceProfile, get_profile, profile_names
from targets.registry import target_names
from targets.tensorrt.compat import MIN_MAJOR

BOARDS = [
    "jetson-orin-nano",
    "jetson-orin-nx",
    "jetson-agx-orin",
    "jetson-xavier-nx",
    "raspberry-pi-5",
    "x86-avx2",
    "x86-avx512-vnni",
]


def test_known_boards() -> None:
    assert profile_names() == sorted(BOARDS)
    for name in BOARDS:
        assert get_profile(name).name == name


def test_unknown_board_lists_the_names() -> None:
    with pytest.raises(KeyError) as err:
        get_profile("jetson-tx2")
    message = err.value.args[0]
    assert "unknown device 'jetson-tx2'" in message
    assert all(name in message for name in BOARDS)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_profiles_keep_their_rules(profile: DeviceProfile) -> None:
    assert profile.target in profile.targets
    assert set(profile.targets) <= set(target_names())
    if profile.supports_sparsity:
        assert profile.compute_capability is not None and profile.compute_capability >= (8, 0)
    if "tensorrt" in profile.targets:
        assert profile.max_workspace_bytes is not None
        assert profile.max_workspace_bytes == min(profile.memory_bytes // 8, 4 << 30)
        # edgec's tensorrt target needs TensorRT 10+: the board's JetPack must have it
        assert profile.tensorrt_version is not None and profile.tensorrt_version >= MIN_TENSORRT
    else:
        assert profile.max_workspace_bytes is None
    if profile.compute_capability is None:
        assert profile.dla_cores == 0 and profile.gpu is None
    d = profile.to_dict()
    assert d["name"] == profile.name and isinstance(d["targets"], list)


def test_board_facts() -> None:
    nano, agx, xavier = (
        get_profile(n) for n in ("jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx")
    )
    assert (nano.compute_capability, nano.dla_cores, nano.supports_sparsity) == ((8, 7), 0, True)
    assert (agx.dla_cores, agx.threads, agx.memory_bytes) == (2, 12, 64 << 30)
    assert (xavier.compute_capability, xavier.supports_sparsity, xavier.dla_cores) == (
        (7, 2),
        False,
        2,
    )
    for orin in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin"):
        board = get_profile(orin)
        assert (board.target, board.jetpack, board.tensorrt_version) == (
            "tensorrt",
            "JetPack 6.1",
            (10, 3),
        )
    assert get_profile("jetson-orin-nx").dla_cores == 2
    pi = get_profile("raspberry-pi-5")
    assert (pi.target, pi.targets, pi.arch, pi.threads) == ("cpu", ("cpu",), "aarch64", 4)
    assert (pi.supports_int8, pi.supports_fp16) == (True, False)
    assert get_profile("x86-avx2").arch == "x86_64"


def test_profiles_are_frozen_and_validated() -> None:
    nano = get_profile("jetson-orin-nano")
    with pytest.raises(dataclasses.FrozenInstanceError):
        nano.threads = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="compute capability 8.0"):
        dataclasses.replace(nano, compute_capability=(7, 2))  # sparsity on Volta
    with pytest.raises(ValueError, match="default target"):
        dataclasses.replace(nano, target="cpu", targets=("tensorrt",))
    with pytest.raises(ValueError, match="unknown targets"):
        dataclasses.replace(nano, targets=("tensorrt", "openvino"))
    with pytest.raises(ValueError, match="compute_capability"):
        dataclasses.replace(nano, supports_sparsity=False, compute_capability=None)
    with pytest.raises(ValueError, match="max_workspace_bytes"):
        dataclasses.replace(nano, max_workspace_bytes=nano.memory_bytes + 1)
    with pytest.raises(ValueError, match="DLA cores come with an NVIDIA GPU"):
        dataclasses.replace(get_profile("raspberry-pi-5"), dla_cores=1)


def test_xavier_offers_no_tensorrt() -> None:
    # JetPack 5.1, Xavier's last, ships TensorRT 8.5: no strongly typed TensorRT 10 there.
    xavier = get_profile("jetson-xavier-nx")
    assert "tensorrt" not in xavier.targets and xavier.target == "cuda"
    assert (xavier.jetpack, xavier.tensorrt_version) == ("JetPack 5.1", (8, 5))
    assert xavier.to_dict()["tensorrt_version"] == [8, 5]
    with pytest.raises(ValueError, match="needs TensorRT 10.0 or newer, the board ships 8.5"):
        dataclasses.replace(xavier, target="tensorrt", targets=("tensorrt", "cuda", "cpu"))


def test_minimum_tensorrt_agrees_with_the_target() -> None:
    assert MIN_TENSORRT == (MIN_MAJOR, 0)


def test_old_agx_name_is_an_alias() -> None:
    assert get_profile("jetson-orin-agx") is get_profile("jetson-agx-orin")
    assert "jetson-orin-agx" not in profile_names()


def test_defaults_a_profile_sets() -> None:
    pi, vnni, nano = (
        get_profile(n) for n in ("raspberry-pi-5", "x86-avx512-vnni", "jetson-orin-nano")
    )
    assert (pi.target, pi.precision, pi.threads) == ("cpu", "int8", 4)
    assert (vnni.target, vnni.precision, vnni.arch) == ("cpu", "int8", "x86_64")
    assert (nano.target, nano.precision) == ("tensorrt", "fp16")
    # 1/16 and 1/4 of 8 GiB, in whole 10^6-byte megabytes; no latency budget anywhere
    assert pi.budgets() == {"max_size_mb": 536.0, "max_memory_mb": 2147.0}
    assert all(p.max_latency_ms is None for p in PROFILES.values())
    with pytest.raises(ValueError, match="precision must be one of"):
        dataclasses.replace(pi, precision="auto")  # a profile names what it runs


def test_refusals_say_why_and_what_to_choose() -> None:
    xavier, pi = get_profile("jetson-xavier-nx"), get_profile("raspberry-pi-5")
    assert xavier.target_refusal("cuda") is None
    why = xavier.target_refusal("tensorrt")
    assert why is not None and "ships TensorRT 8.5" in why and "--target cuda" in why
    why = pi.target_refusal("tensorrt")
    assert why is not None and "no CUDA GPU" in why and "--target cpu" in why
    assert pi.precision_refusal("int8") is None and pi.precision_refusal("auto") is None
    assert "no faster than fp32" in (pi.precision_refusal("fp16") or "")
    assert get_profile("jetson-orin-nx").precision_refusal("fp16") is None
