#!/usr/bin/env python3
"""Run this bundle's model with onnxruntime, after checking every file against manifest.json.

Written by `edgec package`; needs only Python 3.8+, numpy and onnxruntime (no
edgec). Before anything runs, the sha256 of every file the manifest lists is
recomputed; one that differs or is missing stops the run (exit 4), so a
corrupted copy or a swapped model never runs silently.

    python run.py                    random inputs of the manifest's shapes (seeded)
    python run.py --inputs x.npz     arrays named as the model's inputs (.npy: the only input)
    python run.py --check            check the files and stop
    python run.py --dim seq=128      the size of a named dynamic dimension (default 1)
    python run.py --save y.npz       also write the outputs

Exit codes: 0 ok; 2 usage; 4 a file differs from the manifest, or inputs do not fit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
FORMAT_MAJOR = "edgec-bundle/1"


class BundleError(Exception):
    """A problem with the bundle or the inputs: one line, exit 4."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest() -> dict[str, Any]:
    try:
        manifest = json.loads((HERE / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read manifest.json ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_MAJOR:
        raise BundleError(f"manifest.json is not an {FORMAT_MAJOR} manifest")
    return manifest


def check_files(manifest: dict[str, Any]) -> int:
    """Recompute every listed file's sha256; BundleError on the first that differs."""
    files = manifest.get("files") or {}
    for name, entry in sorted(files.items()):
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise BundleError(f"manifest.json lists {name!r}, outside the bundle; refusing")
        path = HERE / rel
        if not path.is_file():
            raise BundleError(f"{name} is missing; the bundle is incomplete, refusing to run")
        if sha256(path) != entry.get("sha256"):
            raise BundleError(
                f"{name} differs from manifest.json (sha256 mismatch); refusing to run"
            )
    return len(files)


def dim_sizes(items: list[str]) -> dict[str, int]:
    sizes = {}
    for item in items:
        name, _, size = item.partition("=")
        if not name or not size.isdigit() or int(size) < 1:
            raise SystemExit(f"run.py: --dim {item!r} is not NAME=N with N >= 1")
        sizes[name] = int(size)
    return sizes


def random_inputs(specs: list[dict[str, Any]], dims: dict[str, int], seed: int) -> dict[str, Any]:
    """Seeded inputs of the manifest's shapes: normal floats, zeros for integers and bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = [d if isinstance(d, int) and d > 0 else dims.get(str(d), 1) for d in spec["shape"]]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec["name"]] = np.zeros(shape, dtype)
    return feeds


def read_inputs(path: Path, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Arrays from a .npz (keys: input names) or a .npy (a single-input model)."""
    names = [s["name"] for s in specs]
    try:
        if path.suffix == ".npy":
            if len(names) != 1:
                raise BundleError(f"the model has {len(names)} inputs; give a .npz naming them")
            return {names[0]: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read {path} ({e})") from None
    missing = [n for n in names if n not in arrays]
    if missing:
        raise BundleError(f"{path} lacks input(s) {missing}; it has {sorted(arrays)}")
    return {s["name"]: arrays[s["name"]].astype(s["dtype"], copy=False) for s in specs}


def session(manifest: dict[str, Any], model: Path) -> Any:
    import onnxruntime as ort

    runtime = manifest["runtime"]
    opts = ort.SessionOptions()
    threads = (manifest.get("device") or {}).get("threads")
    if threads:
        opts.intra_op_num_threads = int(threads)
    available = set(ort.get_available_providers())
    wanted = [p for p in runtime.get("providers", []) if p in available]
    return ort.InferenceSession(str(model), opts, providers=wanted or ["CPUExecutionProvider"])


def show(name: str, value: Any) -> None:
    arr = np.asarray(value)
    print(f"{name}: {arr.dtype} {list(arr.shape)}")
    print(np.array2string(arr, threshold=20, edgeitems=3, precision=5))
    if arr.ndim == 2 and arr.shape[1] > 1 and arr.dtype.kind == "f":
        print(f"{name} argmax per row: {arr.argmax(axis=1).tolist()}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Run this edgec bundle with onnxruntime.")
    parser.add_argument("--inputs", type=Path, help=".npz named by input (or .npy for one input)")
    parser.add_argument("--dim", action="append", default=[], help="NAME=N for a dynamic dim")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--save", type=Path, help="write the outputs to this .npz")
    parser.add_argument("--check", action="store_true", help="check the files and stop")
    args = parser.parse_args(argv)
    manifest = load_manifest()
    n = check_files(manifest)
    model_name = manifest["runtime"]["model"]
    if model_name not in manifest.get("files", {}):
        raise BundleError(f"the model {model_name} is not among the hashed files; refusing")
    if args.check:
        print(f"ok: {n} files match manifest.json")
        return 0
    specs = manifest["inputs"]
    if args.inputs is not None:
        feeds = read_inputs(args.inputs, specs)
    else:
        feeds = random_inputs(specs, dim_sizes(args.dim), args.seed)
    sess = session(manifest, HERE / model_name)
    names = [o.name for o in sess.get_outputs()]
    try:
        outputs = sess.run(names, feeds)
    except Exception as e:  # onnxruntime's errors: wrong shapes or types of the inputs
        raise BundleError(f"onnxruntime refused the inputs: {' '.join(str(e).split())}") from None
    results = {name: outputs[i] for i, name in enumerate(names)}  # no zip(strict=): Python 3.8
    for name, value in results.items():
        show(name, value)
    if args.save is not None:
        np.savez(args.save, **results)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BundleError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        sys.exit(4)
