"""IS: the TF-ported FID Inception-v3 (1008 classes, biasless logits) over every frame.

Network: torchvision's Inception3 with the FID patches (TF average pooling ignores the
zero padding; the last block max-pools), loaded strictly from
``<models>/pt_inception-2015-12-05-6726825d.pth``. As the official ``metrics/is.py``
(vendored pytorch_gan_metrics): RGB frames / 255, bilinear resize to 299x299
(``align_corners=False``), ``2x - 1``, softmax of ``fc`` without its bias. Per video the
record keeps the (T, 1008) probabilities; ``aggregate`` concatenates all videos and takes
10 splits. ``compat``: videos in the order the runner visited them (``os.listdir``, as the
official main); ``fixed``: sorted by id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import inception as tv_inception

from eval_crafter import scoring
from eval_crafter.metrics.base import Metric, ModelFile, VideoInput, require_model
from eval_crafter.metrics.registry import register_metric

__all__ = ["INCEPTION_FILE", "INCEPTION_URL", "FIDInceptionV3", "InceptionScore"]

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/w86763777/pytorch-gan-metrics/releases/download/v0.1.0/"
    "pt_inception-2015-12-05-6726825d.pth (EvalCrafter checkpoints/)"
)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _PoolPatch:
    """Mixin: recompute a block's pool branch with the TF graph's pooling.

    torchvision's ``_forward`` pools with zero padding counted; the pool branch (its last
    output) is recomputed from ``x`` with ``self.tf_pool`` (a 3x3 pool and a 1x1 conv).
    """

    tf_pool = staticmethod(_tf_avg_pool)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = super()._forward(x)
        outputs[-1] = self.branch_pool(self.tf_pool(x))
        return outputs


class _InceptionA(_PoolPatch, tv_inception.InceptionA):
    pass


class _InceptionC(_PoolPatch, tv_inception.InceptionC):
    pass


class _InceptionE1(_PoolPatch, tv_inception.InceptionE):
    pass


class _InceptionE2(_PoolPatch, tv_inception.InceptionE):
    tf_pool = staticmethod(_max_pool)


class FIDInceptionV3(tv_inception.Inception3):
    """The FID Inception-v3; state-dict keys equal the ``pt_inception-*.pth`` file's."""

    def __init__(self) -> None:
        super().__init__(num_classes=1008, aux_logits=False, init_weights=False)
        self.Mixed_5b = _InceptionA(192, pool_features=32)
        self.Mixed_5c = _InceptionA(256, pool_features=64)
        self.Mixed_5d = _InceptionA(288, pool_features=64)
        self.Mixed_6b = _InceptionC(768, channels_7x7=128)
        self.Mixed_6c = _InceptionC(768, channels_7x7=160)
        self.Mixed_6d = _InceptionC(768, channels_7x7=160)
        self.Mixed_6e = _InceptionC(768, channels_7x7=192)
        self.Mixed_7b = _InceptionE1(1280)
        self.Mixed_7c = _InceptionE2(2048)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, 1008) softmax probabilities."""
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        x = torch.flatten(self.avgpool(x), 1)  # n 2048
        return F.softmax(F.linear(x, self.fc.weight), dim=1)


@register_metric
class InceptionScore(Metric):
    """Inception score over all frames of all videos (reported raw, e.g. 14.53)."""

    name = "is"

    def __init__(
        self,
        models_dir: Path | str,
        device: Any = "cpu",
        mode: str = "compat",
        batch_size: int = 8,
        fp32: bool = False,
    ) -> None:
        super().__init__(models_dir, device, mode, batch_size, fp32)
        path = require_model(self.models_dir, INCEPTION_FILE, "FID Inception-v3 weights", INCEPTION_URL)
        self.model = FIDInceptionV3()
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.to(self.device).eval()  # float32, as the official metrics/is.py
        self.record_weights(INCEPTION_FILE)
        self.record_dtype("inception", torch.float32)

    @classmethod
    def required_files(cls, mode: str = "compat", **options: Any) -> list[ModelFile]:
        return [ModelFile(INCEPTION_FILE, "FID Inception-v3 weights", INCEPTION_URL, (cls.name,))]

    @torch.no_grad()
    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """(F, H, W, 3) uint8 RGB -> (F, 1008) float32 probabilities, in batches."""
        out = []
        for start in range(0, len(frames), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + self.batch_size]))
            chunk = chunk.to(self.device).permute(0, 3, 1, 2).float() / 255.0  # f 3 h w
            out.append(self.model(chunk).float().cpu().numpy())
        return np.concatenate(out, 0)

    def score(self, video: VideoInput, meta: dict) -> dict:
        probs = self.probabilities(video.frames)
        return {"frames": int(len(probs)), "probs": probs}

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        probs = {key: np.asarray(r["probs"], dtype=np.float32) for key, r in records.items()}
        if self.mode == "fixed":
            mean, std = scoring.inception_score_fixed(probs)
            order = sorted(probs)
        else:
            mean, std = scoring.inception_score(list(probs.values()))
            order = list(probs)
        return {
            "value": mean,
            "std": std,
            "n": len(probs),
            "frames": int(sum(len(p) for p in probs.values())),
            "official": {"IS": mean},
            "order": order,
        }
