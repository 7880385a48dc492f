"""Small models and rasters with known answers, made on the fly for tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from sn6_footprints.core.model import UNet11
from sn6_footprints.core.settings import ModelSettings
from sn6_footprints.core.weights import save_model


def threshold_model(bands: int = 4, width: float = 0.125, cut: float = 1.0) -> UNet11:
    """A UNet11 whose logit is relu(normalised band 1) - cut: a pixel is a 'building' exactly
    where band 1 exceeds the SN6 normalisation's ``127.5 + cut * 31.875``. Every path but the
    full-resolution skip is zero, so the answer is known pixel for pixel."""
    model = UNet11(in_channels=bands, width=width)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.conv1.weight[0, 0, 1, 1] = 1.0           # conv1 channel 0 = relu(x0)
        nf = model.dec1.conv.out_channels
        model.dec1.conv.weight[0, nf, 1, 1] = 1.0      # dec1 channel 0 = relu(conv1 channel 0)
        model.final.weight[0, 0, 0, 0] = 1.0
        model.final.bias[0] = -cut
    return model.eval()


def save_threshold_model(path: Path, bands: int = 4, **settings) -> Path:
    model = threshold_model(bands)
    return save_model(path, model, ModelSettings(width=model.width, min_area_m2=settings.pop("min_area_m2", 1.0),
                                                 description="test threshold model", **settings).with_bands(bands))


BRIGHT = 255.0  # normalised (255 - 127.5) / 31.875 = 4 > cut
DARK = 60.0


TRANSFORM = Affine(0.5, 0, 594000, 0, -0.5, 5750000)  # write_raster's default: 0.5 m pixels in UTM 31N


def write_raster(path: Path, data: np.ndarray, transform: Affine = TRANSFORM,
                 crs: str | None = "EPSG:32631", nodata: float | None = 0.0, scale: str | None = "sn6",
                 **tags) -> Path:
    """A float32 GeoTIFF of (bands, h, w), tagged SAR_SCALE=``scale`` (the boxes' 255 is no real
    SN6 value, so Auto could not tell it from the values) and with ``tags``."""
    bands, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands,
                       dtype="float32", transform=transform, crs=crs, nodata=nodata) as dst:
        dst.write(data.astype(np.float32))
        if scale:
            tags.setdefault("SAR_SCALE", scale)
        if tags:
            dst.update_tags(**tags)
    return path


def boxes_scene(height: int, width: int, boxes: list[tuple[int, int, int, int]], bands: int = 4) -> np.ndarray:
    """Dark background with bright (row0, col0, row1, col1) boxes in every band."""
    data = np.full((bands, height, width), DARK, np.float32)
    for r0, c0, r1, c1 in boxes:
        data[:, r0:r1, c0:c1] = BRIGHT
    return data
