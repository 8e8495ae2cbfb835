"""JPEG compression as an input transformation (Dziugaite et al. 2016; Guo et al. 2018)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.options import Option

from ._common import Preprocessing

CHANNELS = (1, 3)  # grayscale and RGB: what JPEG encodes


class JPEG(Preprocessing):
    """Each input is quantised to 8 bits, JPEG-encoded at ``quality`` and decoded (Pillow's libjpeg, on the CPU).

    Grayscale and RGB images only. The uint8 round trip has no useful gradient: naive gradient
    attacks see a zero gradient, adaptive ones use BPDA (identity backward). Pillow rather than
    torchvision.io, whose JPEG codec is deprecated since torchvision 0.29 (both give the same bytes).
    """

    name = "jpeg"
    description = "Inference-time JPEG compression of every input (Guo et al. 2018); non-differentiable"
    options = (Option("quality", int, 75, "JPEG quality, 1 (smallest file) to 100", minimum=1, maximum=100),)
    differentiable = False

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        self.check_images(x, channels=CHANNELS)
        pixels = (x.detach().clamp(0.0, 1.0) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        decoded = np.stack([self._round_trip(image) for image in pixels]) if len(pixels) else pixels
        out = torch.from_numpy(decoded).reshape(pixels.shape).permute(0, 3, 1, 2)
        return out.to(device=x.device, dtype=x.dtype) / 255

    def _round_trip(self, image: np.ndarray) -> np.ndarray:
        """One H x W x C uint8 image through a JPEG file in memory."""
        buffer = io.BytesIO()
        # A 2-D uint8 array becomes a grayscale image, an H x W x 3 one an RGB image.
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, format="JPEG", quality=self.quality)
        return np.asarray(Image.open(buffer))


@hookimpl
def register_defenses(register):
    register(JPEG)
