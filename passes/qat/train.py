"""Quantization-aware training: prepare → initialize → train → export, resumable per epoch.

`qat(module, spec, ...)` fine-tunes a fake-quant copy of `module` whose
quantization is PTQ's plan for `spec` (`prepare`), starting from PTQ's own
result on the first `calib_samples` training inputs (`init`: the untrained
copy computes exactly what PTQ's artifact computes), and exports it in PTQ's
QDQ form (`export`).

Training signal (per batch; the FP32 `module` is the teacher, its logits
computed once):

- labels given → cross-entropy;
- no labels → knowledge distillation, so no labels are needed: the mean squared
  logit difference (logit matching, default), or KL(teacher ‖ student) of
  temperature-softened logits times T² (``distill_loss="kl"``, Hinton et al.);
- `distill=True` with labels averages the two.

Adam (weights, biases; quantizer scales in a group of their own, `scale_lr`),
cosine schedule over all steps, no weight decay; Dropout is off while training
unless `dropout=True` (the goal is to match the teacher, and dropout noise on
MobileNetV2's logits cut training agreement from 0.84 to 0.63). BatchNorm is
folded into its layer from the start (running statistics frozen); with
`bn_warmup_epochs=k` (and `init="calibrate"`) the first k epochs use batch
statistics and update the running ones, then they are frozen.

Checkpoints: after every epoch, ``qat_checkpoint.pt`` in `checkpoint_dir` is
replaced atomically (temporary file, fsync, rename) by a dict of plain state
dicts, tensors, numbers and strings, loaded back with ``weights_only=True``.
It carries a fingerprint of everything that determines the run (spec,
hyper-parameters, data, initial weights); `resume=True` continues after the
last finished epoch of a matching checkpoint and refuses a foreign one. Each
epoch reseeds torch from (seed, epoch) and shuffles with its own generator, so
an interrupted and resumed run computes the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import nn

from compiler.ground.io import atomic_torch_save
from compiler.ground.sessions import open_session, session_options
from passes.errors import PassOptionError
from passes.qat.export import export_qat
from passes.qat.fake_quant import QuantLayer
from passes.qat.graph import QUANTIZERS
from passes.qat.init import apply_structure, calibrate, init_from_ptq
from passes.qat.prepare import QatModel, prepare_qat
from passes.quantize.options import PtqOptions
from passes.quantize.spec import QuantSpec

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "qat_checkpoint.pt"
_CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class QatOptions:
    """The less common knobs of `qat` (defaults suit the zoo's models; measured in
    bench/qat_compare.py)."""

    temperature: float = 4.0
    distill: bool | None = None  # None: distill when there are no labels
    # "mse" (logit matching) or "kl" (softened logits, `temperature`). On MobileNetV2 from
    # the same PTQ start, 2 epochs: logit SQNR 21.1 dB with mse, 19.8 dB with kl.
    distill_loss: str = "mse"
    init: str = "ptq"  # "ptq": PTQ's full result; "calibrate": ranges only, nearest rounding
    # The PTQ run that starts QAT, on the first `ptq.samples` training inputs (None: all).
    # init="calibrate" honours its method, percentile, samples, float_stem and threads
    # only; options QAT cannot honour are refused (`refused_ptq_options`).
    ptq: PtqOptions = dataclasses.field(default_factory=PtqOptions)
    bn_warmup_epochs: int = 0
    dropout: bool = False  # keep Dropout active while training (off: match the teacher)
    scale_lr: float | None = None  # None: the weights' learning rate
    seed: int = 0
    eval_batch_size: int = 64
    threads: int | None = None  # torch threads during the run (restored after)
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("output",)
    opset: int = 17

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.bn_warmup_epochs < 0:
            raise PassOptionError(f"invalid QAT options: {self}")
        if self.scale_lr is not None and self.scale_lr < 0:
            raise PassOptionError(f"scale_lr must be >= 0, got {self.scale_lr}")
        if self.distill_loss not in ("kl", "mse"):
            raise PassOptionError(f"distill_loss must be 'kl' or 'mse', got {self.distill_loss!r}")
        if self.init not in ("ptq", "calibrate"):
            raise PassOptionError(f"init must be 'ptq' or 'calibrate', got {self.init!r}")
        if self.init == "ptq" and self.bn_warmup_epochs:
            raise PassOptionError(
                "BN warm-up trains BatchNorm statistics before folding; use init='calibrate' with it"
            )
        refused = refused_ptq_options(self.ptq, self.init)
        if refused:
            name, why = next(iter(refused.items()))
            raise PassOptionError(f"QAT cannot honour the PTQ option {name}: {why}")


# PTQ options that change *which* layers run in int8 or report on PTQ alone: QAT trains
# every layer PTQ's plan quantizes, so it cannot follow them.
_PTQ_ONLY = {
    "exclude": "QAT quantizes every layer PTQ's plan quantizes; drop it",
    "min_sqnr_db": "the float fallback keeps layers in float after PTQ, and QAT trains "
    "every planned layer in int8; drop it",
    "min_agreement": "the float fallback keeps layers in float after PTQ, and QAT trains "
    "every planned layer in int8; drop it",
    "max_float_layers": "it bounds PTQ's float fallback, which QAT does not run; drop it",
    "sensitivity": "per-layer sensitivity describes PTQ's result, not QAT's; drop it",
}
# what init="calibrate" (ranges only) takes from the PTQ options
_CALIBRATE_USES = frozenset({"method", "percentile", "samples", "float_stem", "threads"})


def refused_ptq_options(ptq: PtqOptions, init: str = "ptq") -> dict[str, str]:
    """{PTQ option: why QAT cannot honour it} for the options `ptq` sets that QAT's
    initialisation `init` would not follow (empty: QAT honours every one)."""
    changed = ptq.changed()
    refused = {name: why for name, why in _PTQ_ONLY.items() if name in changed}
    if init == "calibrate":
        for name in changed:
            if name not in _CALIBRATE_USES and name not in refused:
                refused[name] = (
                    "init='calibrate' sets activation ranges only; use init='ptq' to run "
                    "PTQ's other steps"
                )
    return refused


@dataclass(frozen=True)
class QatProgress:
    """Reported after every training step: running loss and top-1 agreement with the teacher."""

    epoch: int  # 1-based
    epochs: int
    step: int  # steps done in this epoch
    steps: int
    loss: float  # mean over this epoch's samples so far
    agreement: float  # student argmax == FP32 argmax, this epoch's samples so far


@dataclass
class QatResult:
    """The exported QDQ model, the trained fake-quant module and the accuracy story.

    Accuracies are top-1 on the evaluation set against its labels, or top-1
    agreement with the FP32 module when it has none (`metric` says which):
    FP32, the calibrated fake-quant model before training (PTQ's starting
    point), after training (torch), and the exported model under onnxruntime.
    """

    model: ir.Model
    module: nn.Module
    spec: str
    metric: str
    accuracy_fp32: float
    accuracy_before: float
    accuracy_after: float
    accuracy_exported: float | None
    history: list[dict[str, float]]
    epochs: int
    resumed_from_epoch: int | None
    seconds: dict[str, float]
    ptq: dict[str, Any] | None = None  # PTQ's summary when it initialized the run

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (for the report's QAT section)."""
        r4 = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        return {
            "spec": self.spec,
            "epochs": self.epochs,
            "metric": self.metric,
            "accuracy_fp32": r4(self.accuracy_fp32),
            "accuracy_before": r4(self.accuracy_before),
            "accuracy_after": r4(self.accuracy_after),
            "accuracy_exported": r4(self.accuracy_exported),
            "resumed_from_epoch": self.resumed_from_epoch,
            "history": [
                {k: r4(v) if isinstance(v, float) else v for k, v in h.items()}
                for h in self.history
            ],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


Progress = Callable[[QatProgress], None]


def qat(
    module: nn.Module,
    spec: QuantSpec,
    *,
    train_inputs: np.ndarray,
    train_labels: np.ndarray | None = None,
    eval_inputs: np.ndarray,
    eval_labels: np.ndarray | None = None,
    epochs: int,
    lr: float,
    batch_size: int,
    learn_scales: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    options: QatOptions | None = None,
) -> QatResult:
    """Quantization-aware training of a copy of `module` for `spec`, exported to QDQ ONNX.

    Single-input modules; `train_inputs`/`eval_inputs` are (N, ...) float arrays,
    labels (N,) integer class indices. The first `options.ptq.samples` training
    inputs initialise the quantizers (and, with init="ptq", the weights) through
    PTQ. `module` itself is not modified.
    """
    opts = options or QatOptions()
    x_train, y_train, x_eval, y_eval = _validate(
        train_inputs, train_labels, eval_inputs, eval_labels, epochs, lr, batch_size, opts
    )
    distill = _distill(opts, y_train, resume, checkpoint_dir)
    if opts.ptq.float_stem is not None:
        spec = spec.replace(float_stem=opts.ptq.float_stem)
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    times: dict[str, float] = {}
    with _threads(opts.threads):
        t0 = time.perf_counter()
        teacher = copy.deepcopy(module).eval()
        qm = _prepare(module, spec, x_train, learn_scales, opts)
        times["prepare"] = time.perf_counter() - t0
        teacher_train = _logits(teacher, x_train, opts.eval_batch_size)
        teacher_eval = _logits(teacher, x_eval, opts.eval_batch_size)
        loop = _Loop(
            qm, x_train, y_train, teacher_train, x_eval,
            teacher_eval.argmax(-1) if y_eval is None else y_eval,
            "top1_accuracy" if y_eval is not None else "top1_agreement",
            epochs, lr, batch_size, distill, opts, progress, path,
        )  # fmt: skip
        t1 = time.perf_counter()
        fingerprint = _fingerprint(
            module, spec, x_train, y_train, epochs, lr, batch_size, learn_scales, opts
        )
        state, resumed_from = loop.start(resume, fingerprint)
        times["calibrate"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        history = loop.train(state, resumed_from is not None, fingerprint)
        times["train"] = time.perf_counter() - t2
        qm.module.eval()
        acc_after = history[-1]["accuracy"] if history else float(state["accuracy_before"])
        model, acc_exported = _export(loop, times)
    return QatResult(
        model=model,
        module=qm.module,
        spec=spec.name,
        metric=loop.metric,
        accuracy_fp32=_top1(teacher_eval, loop.target),
        accuracy_before=float(state["accuracy_before"]),
        accuracy_after=acc_after,
        accuracy_exported=acc_exported,
        history=history,
        epochs=epochs,
        resumed_from_epoch=resumed_from,
        seconds=times,
        ptq=state["ptq"],
    )


def _prepare(
    module: nn.Module, spec: QuantSpec, x: torch.Tensor, learn_scales: bool, opts: QatOptions
) -> QatModel:
    """The fake-quant copy of `module` (BatchNorm folded unless BN warm-up needs it live)."""
    return prepare_qat(
        module,
        spec,
        x[:1],
        input_names=opts.input_names,
        output_names=opts.output_names,
        opset=opts.opset,
        learn_scales=learn_scales,
        fold_bn=opts.bn_warmup_epochs == 0,
    )


def _distill(
    opts: QatOptions,
    y_train: torch.Tensor | None,
    resume: bool,
    checkpoint_dir: str | os.PathLike[str] | None,
) -> bool:
    """Whether the run distills from the FP32 module (checked against labels and resume)."""
    distill = opts.distill if opts.distill is not None else y_train is None
    if not distill and y_train is None:
        raise PassOptionError("QAT without distillation needs train_labels")
    if resume and checkpoint_dir is None:
        raise PassOptionError("resume=True needs a checkpoint_dir")
    return distill


def _export(loop: _Loop, times: dict[str, float]) -> tuple[ir.Model, float]:
    """The QDQ model and its accuracy under onnxruntime (timed into `times`)."""
    t = time.perf_counter()
    model = export_qat(loop.qm)
    times["export"] = time.perf_counter() - t
    out = _run_onnx(model, loop.x_eval.numpy(), loop.opts)
    return model, _top1(torch.from_numpy(out), loop.target)


@dataclass
class _Loop:
    """One QAT run's fixed inputs: starts (or resumes) it and runs its epochs."""

    qm: QatModel
    x: torch.Tensor
    y: torch.Tensor | None
    teacher: torch.Tensor  # the FP32 module's logits on `x`
    x_eval: torch.Tensor
    target: torch.Tensor  # evaluation labels, or the FP32 module's top-1
    metric: str
    epochs: int
    lr: float
    batch_size: int
    distill: bool
    opts: QatOptions
    progress: Progress | None
    path: Path | None  # the checkpoint file (None: no checkpoints)

    @property
    def steps(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def evaluate(self, m: nn.Module) -> float:
        return _top1(_logits(m, self.x_eval, self.opts.eval_batch_size), self.target)

    def start(self, resume: bool, fingerprint: str) -> tuple[dict[str, Any], int | None]:
        """(run state, epoch resumed after): PTQ's initialisation, or a matching checkpoint."""
        qm, opts = self.qm, self.opts
        state = _load_checkpoint(self.path, fingerprint) if resume else None
        if state is None:
            ptq_summary = _initialize(qm, self.x[: opts.ptq.samples].numpy(), opts)
            state = {"epoch": 0, "history": [], "accuracy_before": self.evaluate(qm.module)}
            state["ptq"] = ptq_summary
            return state, None
        apply_structure(qm, state["structure"])  # Clip bounds PTQ's equalization moved
        for name, layer in qm.layers.items():  # PTQ's bias correction may have added biases
            if f"{name}.layer.bias" in state["model"]:
                layer.ensure_bias()
        qm.module.load_state_dict(state["model"])
        logger.info("resuming QAT after epoch %d from %s", int(state["epoch"]), self.path)
        return state, int(state["epoch"])

    def train(
        self, state: dict[str, Any], resumed: bool, fingerprint: str
    ) -> list[dict[str, float]]:
        """The remaining epochs (a checkpoint after each); returns the whole run's history."""
        student, opts = self.qm.module, self.opts
        opt, sched = _optimizer(student, self.lr, opts.scale_lr, self.epochs * self.steps)
        if resumed:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        history: list[dict[str, float]] = list(state["history"])
        for epoch in range(int(state["epoch"]), self.epochs):
            loss, agree = self._epoch(epoch, opt, sched)
            acc = self.evaluate(student)
            history.append(
                {"epoch": epoch + 1, "loss": loss, "train_agreement": agree, "accuracy": acc}
            )
            logger.info(
                "QAT epoch %d/%d: loss %.4f, agreement %.4f, %s %.4f",
                epoch + 1, self.epochs, loss, agree, self.metric, acc,
            )  # fmt: skip
            if self.path is not None:
                ckpt = {
                    "format": _CHECKPOINT_FORMAT,
                    "fingerprint": fingerprint,
                    "epoch": epoch + 1,
                    "model": student.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "history": history,
                    "accuracy_before": state["accuracy_before"],
                    "ptq": state["ptq"],
                    "structure": self.qm.structure,
                }
                atomic_torch_save(ckpt, self.path)
        return history

    def _epoch(self, epoch: int, opt: torch.optim.Optimizer, sched: Any) -> tuple[float, float]:
        """One epoch, seeded from (seed, epoch) so a resumed run repeats it exactly."""
        opts, progress = self.opts, self.progress

        def report(step: int, loss: float, agree: float) -> None:
            if progress is not None:
                progress(QatProgress(epoch + 1, self.epochs, step, self.steps, loss, agree))

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.seed * 100_003 + epoch)
            shuffle = torch.Generator().manual_seed(opts.seed * 7919 + epoch)
            return _train_epoch(
                self.qm.module,
                self.x,
                self.y,
                self.teacher,
                torch.randperm(len(self.x), generator=shuffle),
                self.batch_size,
                opt,
                sched,
                distill=self.distill,
                distill_loss=opts.distill_loss,
                temperature=opts.temperature,
                bn_live=epoch < opts.bn_warmup_epochs,
                dropout=opts.dropout,
                report=report,
            )


def _initialize(qm: QatModel, calib: np.ndarray, opts: QatOptions) -> dict[str, Any] | None:
    """PTQ's full result (init="ptq", returns its summary) or PTQ's calibration only; PTQ
    runs on the options' threads, else on the run's."""
    ptq = dataclasses.replace(opts.ptq, threads=opts.ptq.threads or opts.threads or 0)
    if opts.init == "ptq":
        return init_from_ptq(qm, calib, ptq)
    calibrate(qm, calib, ptq, batch_size=opts.eval_batch_size)
    return None


def _optimizer(
    student: nn.Module, lr: float, scale_lr: float | None, total_steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    """Adam (quantizer scales in their own group) with a cosine schedule over all steps."""
    scales: list[nn.Parameter] = []
    others: list[nn.Parameter] = []
    for name, p in student.named_parameters():
        if p.requires_grad:
            (scales if name.startswith(f"{QUANTIZERS}.") else others).append(p)
    groups: list[dict[str, Any]] = [{"params": others, "lr": lr}]
    if scales:
        groups.append({"params": scales, "lr": scale_lr if scale_lr is not None else lr})
    opt = torch.optim.Adam(groups)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))


# -- training ----------------------------------------------------------------------------


def _train_epoch(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    teacher_logits: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    opt: torch.optim.Optimizer,
    sched: Any,
    *,
    distill: bool,
    distill_loss: str,
    temperature: float,
    bn_live: bool,
    dropout: bool,
    report: Callable[[int, float, float], None] | None,
) -> tuple[float, float]:
    student.train()
    _set_bn(student, live=bn_live)
    if not dropout:
        for m in student.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
    total_loss, agree, seen = 0.0, 0, 0
    steps = -(-len(x) // batch_size)
    for step in range(steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        logits = student(x[idx])
        t_logits = teacher_logits[idx]
        losses = []
        if distill:
            losses.append(distillation_loss(logits, t_logits, distill_loss, temperature))
        if y is not None:
            losses.append(F.cross_entropy(logits, y[idx]))
        # the mean of the distillation and label losses when both apply
        loss = losses[0] if len(losses) == 1 else (losses[0] + losses[1]) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        n = len(idx)
        total_loss += float(loss.detach()) * n
        agree += int((logits.detach().argmax(-1) == t_logits.argmax(-1)).sum())
        seen += n
        if report is not None:
            report(step + 1, total_loss / seen, agree / seen)
    student.eval()
    _set_bn(student, live=False)
    return total_loss / max(seen, 1), agree / max(seen, 1)


def distillation_loss(
    logits: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float
) -> torch.Tensor:
    """``kl``: KL(teacher ‖ student) of temperature-softened logits, times T² (Hinton et al.);
    ``mse``: mean squared logit difference (logit matching)."""
    if kind == "mse":
        return F.mse_loss(logits, teacher)
    return (
        F.kl_div(
            F.log_softmax(logits / temperature, -1),
            F.log_softmax(teacher / temperature, -1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


def _set_bn(module: nn.Module, *, live: bool) -> None:
    """Batch statistics during BN warm-up only; frozen running statistics otherwise.

    Freezing fixes the weight scales of the layers whose folded weights moved with
    the statistics (during warm-up they follow max|W| / qmax)."""
    for m in module.modules():
        if isinstance(m, QuantLayer):
            if m.bn is not None and bool(m.bn_frozen) == live:
                m.bn_frozen.fill_(not live)
                if not live and m.quantize_weight and m.weight_axis is not None:
                    m.fix_weight_scale()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(live and module.training)


def _logits(module: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            return torch.cat([module(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        module.train(was)


def _top1(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float((logits.argmax(-1) == target).double().mean()) if len(target) else float("nan")


def _run_onnx(model: ir.Model, x: np.ndarray, opts: QatOptions) -> np.ndarray:
    sess = open_session(
        ir.to_proto(model).SerializeToString(), session_options(threads=opts.threads)
    )
    name = sess.get_inputs()[0].name
    b = opts.eval_batch_size
    return np.concatenate([sess.run(None, {name: x[i : i + b]})[0] for i in range(0, len(x), b)])


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _validate(
    train_inputs: Any,
    train_labels: Any,
    eval_inputs: Any,
    eval_labels: Any,
    epochs: int,
    lr: float,
    batch_size: int,
    opts: QatOptions,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    x_train, y_train = _tensors("train", train_inputs, train_labels)
    x_eval, y_eval = _tensors("eval", eval_inputs, eval_labels)
    return x_train, y_train, x_eval, y_eval


def _tensors(what: str, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Checked float32 inputs and int64 labels (None without labels) as torch tensors."""
    a = np.asarray(x)
    if a.ndim < 1 or len(a) == 0 or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(
            f"{what}_inputs must be a non-empty float array (N, ...), got {a.dtype} {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{what}_inputs hold NaN or Inf")
    xt = torch.from_numpy(np.array(a, dtype=np.float32, copy=True, order="C"))
    if y is None:
        return xt, None
    b = np.asarray(y)
    if b.shape != (len(a),) or not np.issubdtype(b.dtype, np.integer):
        raise ValueError(f"{what}_labels must be ({len(a)},) integers, got {b.dtype} {b.shape}")
    return xt, torch.from_numpy(b.astype(np.int64))


# -- checkpoints ---------------------------------------------------------------------------


def _fingerprint(
    module: nn.Module,
    spec: QuantSpec,
    x: torch.Tensor,
    y: torch.Tensor | None,
    epochs: int,
    lr: float,
    batch_size: int,
    learn_scales: bool,
    opts: QatOptions,
) -> str:
    h = hashlib.sha256()
    settings = {
        "spec": spec.to_dict(),
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "learn_scales": learn_scales,
        "options": {
            k: v
            for k, v in dataclasses.asdict(opts).items()
            if k not in ("threads", "eval_batch_size", "ptq")
        },
        "ptq": {k: v for k, v in dataclasses.asdict(opts.ptq).items() if k != "threads"},
        "torch": torch.__version__,
    }
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(x.numpy().tobytes())
    if y is not None:
        h.update(y.numpy().tobytes())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_checkpoint(path: Path | None, fingerprint: str) -> dict[str, Any] | None:
    if path is None or not path.exists():
        if path is not None:
            logger.info("no QAT checkpoint at %s; starting from the beginning", path)
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign file
        raise ValueError(
            f"cannot read the QAT checkpoint {path} ({type(e).__name__}); delete it to start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a QAT checkpoint of this edgec version; delete it to start over"
        )
    if state.get("fingerprint") != fingerprint:
        raise ValueError(
            f"the QAT checkpoint {path} is from a different run (model, data, spec or settings "
            "differ); delete it or run without --resume"
        )
    return state
