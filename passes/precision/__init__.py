"""FP16: convert a float32 model to float16, keeping float32 where the data says so.

Rewrite (`Fp16Pass`, in place)::

    float32 weights and activations  ->  float16, except the nodes kept float32,
                                         with a Cast at every float32/float16 boundary

Decision (like NVIDIA ModelOpt's AutoCast: from a reference run on calibration
data, per node), in `plan`: op types kept by default (reductions, Pow, Random*,
Range, CumSum: `DEFAULT_KEEP_OP_TYPES`), the statistics of a decomposed
normalization (Add eps / Sqrt / Reciprocal / the Div applying them), nodes whose
results are integer/bool (Casts to int, comparisons) and the float arithmetic that
only feeds them, nodes named in `exclude`; then per node from the data: a finite
value above `max_abs` (float16's 65504 / 16) in its inputs or outputs, or its own
float16 error above `max_relative_error` (1 %), measured by running every node
alone in float16 on its float32 reference inputs rounded to float16, all nodes in
one check model (`measure` says why per node rather than the whole float16 model).
Exp/Log overflow or underflow is caught by those two measures.

Types (`ops`): a node's float16 form follows its ONNX schema (type parameters that
admit float16 change; fixed float inputs such as Resize's scales and
attribute-typed outputs such as LayerNormalization's Mean stay float32); Cast
``to=FLOAT`` and ConstantOfShape's value become float16; integer, bool and double
tensors are never touched. `rewrite` inserts the Casts (one per value and target
type), converts constants in place or, when float32 and float16 readers share
one, adds a float16 copy; `keep_io_types` keeps graph inputs/outputs float32.

Refuses (`PassInputError`): a model that already has float16 tensors (one this
pass converted is left alone: ``modified=False``, marked in metadata ``MARK``), a
model with no float32 tensor, unusable calibration data; `PassOptionError` for bad
options (`Fp16Options`) or unknown exclude names. Not converted (kept float32,
reported): nodes holding subgraphs (If/Loop/Scan) and their bodies (main-graph
values they read get a float32 Cast), ops outside the default ONNX domain, and
nodes onnxruntime cannot build in float16 (the check model runs on onnxruntime's
CPU provider).

Defaults: `max_abs` 4094 leaves 16x headroom for inputs the calibration data did
not cover (ModelOpt AutoCast's default is 512); 1 % per-node error is 20x the
error of float16 rounding alone (~5e-4) and keeps the ill-conditioned nodes only
(bench/fp16_compare.py shows what each model keeps).

Returns `Fp16PassResult(model, modified, summary)`: `Fp16Summary` counts nodes
converted, nodes kept float32 with their reasons, Casts inserted and constants
converted or copied, and compares each graph output with float32 on the
calibration data with every float16 tensor stored in float16
(`emulate.emulate_float16_storage`: onnxruntime's CPU runs float16 ops that lack
CPU kernels in float32 and keeps the tensors between them in float32, which hides
overflow a GPU would hit).

Measured (bench/fp16_compare.py): on mobilenet_v2, digits_cnn/gru, BERT and GPT-2
nothing overflows or errs, so the result equals onnxconverter-common's where that
loads (top-1 agreement 1.0, size 0.50-0.52x); onnxconverter-common's output does not
load in onnxruntime for GPT-2 (both I/O modes) and BERT with float32 I/O (a Cast to
float left typed float16), and on an RMSNorm whose x^2 passes 65504 its float16
storage gives max |error| 1.47 where this pass keeps the statistic float32
(0.001).
"""

from __future__ import annotations

from passes.precision.fp16 import MARK, Fp16Pass, Fp16PassResult, Fp16Summary, NodeError
from passes.precision.measure import OutputError
from passes.precision.options import DEFAULT_KEEP_OP_TYPES, FP16_MAX, Fp16Options
from passes.precision.plan import KeptNode

__all__ = [
    "DEFAULT_KEEP_OP_TYPES",
    "FP16_MAX",
    "MARK",
    "Fp16Options",
    "Fp16Pass",
    "Fp16PassResult",
    "Fp16Summary",
    "KeptNode",
    "NodeError",
    "OutputError",
]
