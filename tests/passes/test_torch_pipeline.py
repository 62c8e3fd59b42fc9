"""cleanup_passes() + fusion_passes() on a small torch-exported CNN.

torch (TorchScript exporter, opset 17) leaves BatchNormalization in the graph and
omits Dropout in eval mode, so the test splices an inference Dropout back in where
torch had one; the passes must remove every BN and Dropout and keep the function,
for the dynamic batch sizes the model declares.
"""

from __future__ import annotations

import io
import warnings

import onnx
import onnx_ir as ir
import pytest

from passes.cleanup import cleanup_passes
from passes.fusion import fusion_passes
from passes.verify import check_equivalent

torch = pytest.importorskip("torch")


def _net():
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.drop = torch.nn.Dropout(0.3)
            self.fc = torch.nn.Linear(8 * 6 * 6, 10)
            self.bn1 = torch.nn.BatchNorm1d(10)

        def forward(self, x):
            x = self.drop(torch.relu(self.bn(self.conv(x))))
            return self.bn1(self.fc(torch.flatten(x, 1)))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # non-trivial statistics, so folding has something to fold
        for bn in (net.bn, net.bn1):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    return net


@pytest.fixture(scope="module")
def exported() -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _net(),
            (torch.randn(2, 3, 6, 6),),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
            do_constant_folding=False,
        )
    model = ir.from_proto(onnx.load_from_string(buffer.getvalue()))
    relu = next(node for node in model.graph if node.op_type == "Relu")
    users = list(relu.outputs[0].uses())
    dropout = ir.node("Dropout", [relu.outputs[0]])
    for use in users:
        use.node.replace_input_with(use.idx, dropout.outputs[0])
    model.graph.insert_after(relu, dropout)
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize("onnxsim", [True, False], ids=["with-onnxsim", "without-onnxsim"])
def test_cleanup_and_fusion_on_a_torch_model(kit, exported, onnxsim):
    assert {"BatchNormalization", "Dropout"} <= set(kit.op_counts(exported))
    pipeline = ir.passes.PassManager([*cleanup_passes(onnxsim=onnxsim), *fusion_passes()])
    out = kit.apply(pipeline, exported)
    assert kit.op_sequence(out.after) == ["Conv", "Relu", "Flatten", "Gemm"]
    for batch in (1, 3):
        check_equivalent(exported, out.after, batch=batch, **kit.F32_TOL)
    dim = out.after.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N"


def _inverted_residual_net():
    def block(cin, cout, expand, stride):
        hidden = cin * expand
        return torch.nn.Sequential(
            torch.nn.Conv2d(cin, hidden, 1, bias=False),
            torch.nn.BatchNorm2d(hidden),
            torch.nn.ReLU6(),
            torch.nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            torch.nn.BatchNorm2d(hidden),
            torch.nn.ReLU6(),
            torch.nn.Conv2d(hidden, cout, 1, bias=False),
            torch.nn.BatchNorm2d(cout),
        )

    class Residual(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return x + self.inner(x)

    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU6(),
        Residual(block(16, 16, 1, 1)),
        block(16, 24, 6, 2),
        Residual(block(24, 24, 6, 1)),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(24, 10),
    )


def _attention_net():
    class Attention(torch.nn.Module):
        def __init__(self, dim=32, heads=4):
            super().__init__()
            self.heads = heads
            self.norm = torch.nn.LayerNorm(dim)
            self.qkv = torch.nn.Linear(dim, 3 * dim)
            self.out = torch.nn.Linear(dim, dim)
            self.fc = torch.nn.Linear(dim, dim)
            self.bn = torch.nn.BatchNorm1d(dim)

        def forward(self, x):
            b, t, d = x.shape

            def heads(z):
                return z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)

            q, k, v = self.qkv(self.norm(x)).chunk(3, -1)
            scores = heads(q) @ heads(k).transpose(-1, -2) / (d // self.heads) ** 0.5
            context = torch.softmax(scores, -1) @ heads(v)
            y = x + self.out(context.transpose(1, 2).reshape(b, t, d))
            return self.bn(self.fc(y.mean(1)))

    return Attention()


@pytest.mark.slow
@pytest.mark.parametrize("onnxsim", [True, False], ids=["with-onnxsim", "without-onnxsim"])
@pytest.mark.parametrize(
    ("factory", "shape", "dynamic"),
    [
        (_inverted_residual_net, (2, 3, 32, 32), {"x": {0: "N"}, "y": {0: "N"}}),
        (_attention_net, (2, 5, 32), {"x": {0: "B", 1: "T"}, "y": {0: "B"}}),
    ],
    ids=["inverted-residual", "attention"],
)
def test_larger_torch_models(kit, factory, shape, dynamic, onnxsim):
    torch.manual_seed(0)
    net = factory().eval()
    with torch.no_grad():
        for bn in net.modules():
            if isinstance(bn, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(*shape),),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=dynamic,
            do_constant_folding=False,
        )
    exported = onnx.load_from_string(buffer.getvalue())
    pipeline = ir.passes.PassManager([*cleanup_passes(onnxsim=onnxsim), *fusion_passes()])
    out = kit.apply(pipeline, exported, tol=kit.F32_TOL)
    assert kit.op_counts(out.after)["BatchNormalization"] == 0
    assert {o.domain for o in out.after.opset_import} == {""}
