"""The corpus's vision models: timm classifiers (random init, `pretrained=False`) and a
YOLO-style detector written here on a timm backbone (the head is ours, the backbone
is not), each seeded with torch.manual_seed(0)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bench.corpus_case import Built, batch_axes
from bench.timm_import import load_timm

#: YOLOv3/v5's anchor boxes in pixels, three per scale (strides 8, 16, 32)
ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)


def timm_classifier(name: str, size: int, **kwargs: Any) -> Callable[[], Built]:
    """A timm model by name (random init, 100 classes) on `size` x `size` images."""

    def build() -> Built:
        torch.manual_seed(0)
        model = load_timm().create_model(name, pretrained=False, num_classes=100, **kwargs)
        image = torch.randn(2, 3, size, size)
        return Built(model.eval(), (image,), ["image"], ["logits"], batch_axes(["image", "logits"]))

    return build


class YoloStyle(torch.nn.Module):
    """A YOLO-style detector: timm's mobilenetv3_small_100 features at strides 8/16/32,
    a 1x1 conv head per scale predicting 3 anchors x (4 box + objectness + classes),
    decoded as YOLOv5 does: xy = (2 sigmoid - 0.5 + cell) * stride, wh = (2 sigmoid)^2
    * anchor, boxes as x1 y1 x2 y2 pixels (up to ~`size`). Outputs boxes (N, K, 4),
    objectness (N, K), class scores (N, K, classes): three scales of different
    magnitude, the mix a quantizer has to keep apart."""

    def __init__(self, size: int, classes: int) -> None:
        super().__init__()
        self.backbone = load_timm().create_model(
            "mobilenetv3_small_100", pretrained=False, features_only=True, out_indices=(2, 3, 4)
        )
        info = self.backbone.feature_info
        self.strides = [int(s) for s in info.reduction()]
        self.classes = classes
        self.heads = torch.nn.ModuleList(
            torch.nn.Conv2d(c, 3 * (5 + classes), 1) for c in info.channels()
        )
        for i, stride in enumerate(self.strides):
            cells = size // stride
            ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
            grid = torch.stack([xs, ys], -1).float().view(1, 1, cells, cells, 2)
            self.register_buffer(f"grid{i}", grid)
            self.register_buffer(f"anchor{i}", torch.tensor(ANCHORS[i]).float().view(1, 3, 1, 1, 2))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, objectness, scores = [], [], []
        for i, feature in enumerate(self.backbone(image)):
            grid, anchor = getattr(self, f"grid{i}"), getattr(self, f"anchor{i}")
            cells = grid.shape[2]
            p = self.heads[i](feature).reshape(-1, 3, 5 + self.classes, cells, cells)
            p = p.permute(0, 1, 3, 4, 2).sigmoid()
            xy = (p[..., 0:2] * 2 - 0.5 + grid) * self.strides[i]
            wh = (p[..., 2:4] * 2) ** 2 * anchor
            boxes.append(torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(-1, 3 * cells**2, 4))
            objectness.append(p[..., 4].reshape(-1, 3 * cells**2))
            scores.append(p[..., 5:].reshape(-1, 3 * cells**2, self.classes))
        return torch.cat(boxes, 1), torch.cat(objectness, 1), torch.cat(scores, 1)


def yolo_style(size: int = 480, classes: int = 8) -> Built:
    torch.manual_seed(0)
    model = YoloStyle(size, classes).eval()
    outputs = ["boxes", "objectness", "class_scores"]
    args = (torch.randn(2, 3, size, size),)
    return Built(model, args, ["image"], outputs, batch_axes(["image", *outputs]))
