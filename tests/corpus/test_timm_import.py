"""timm through the private torchvision (bench/timm_import.py): torchvision's own
Python code works, its compiled ops are honestly missing, and nothing else in the
environment sees torchvision."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.timm_import import load_timm


def test_frozen_batch_norm_is_torchvisions_and_exact() -> None:
    """timm's freeze_batch_norm_2d swaps BatchNorm2d for torchvision's FrozenBatchNorm2d:
    the real class, computing what the eval-mode BatchNorm computed."""
    timm = load_timm()
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(image)
        frozen = timm.utils.model.freeze_batch_norm_2d(model)
        after = frozen(image)
    kinds = {type(m).__module__ + "." + type(m).__name__ for m in frozen.modules()}
    assert "torchvision.ops.misc.FrozenBatchNorm2d" in kinds
    assert "torch.nn.modules.batchnorm.BatchNorm2d" not in kinds
    assert torch.max(torch.abs(before - after)).item() <= 1e-5


@pytest.mark.skipif(torch.version.cuda is not None, reason="a CUDA torch loads torchvision's ops")
def test_compiled_ops_are_missing_not_faked() -> None:
    load_timm()  # first: it puts the private torchvision on sys.path
    import torchvision

    with pytest.raises(RuntimeError, match="Couldn't load custom C\\+\\+ ops"):
        torchvision.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)


@pytest.mark.skipif(torch.version.cuda is not None, reason="a CUDA torch may have its torchvision")
def test_environment_without_the_loader_has_no_torchvision() -> None:
    """A process that does not ask for timm imports transformers' models as before, and
    sees no torchvision (on a CPU torch no registry torchvision wheel would import)."""
    code = (
        "import importlib.util, sys\n"
        "from transformers import BertModel, GPT2Model\n"
        "print(importlib.util.find_spec('torchvision') is None, 'torchvision' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["True", "False"]
