"""A batch of windows in, building probabilities out: normalisation, padding and the model."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import DeviceError, resolve_precision
from ..model import INPUT_MULTIPLE_PX, UNet11
from ..settings import ModelSettings


def normalise(data: np.ndarray, settings: ModelSettings) -> np.ndarray:
    """(x - mean) / std per band, in place on a float32 (bands, h, w) array."""
    mean = np.asarray(settings.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(settings.std, dtype=np.float32)[:, None, None]
    data -= mean
    data /= std
    return data


def pad_to_multiple(data: np.ndarray, multiple: int = INPUT_MULTIPLE_PX) -> np.ndarray:
    """Reflect-pad (bands, h, w) on the bottom/right to multiples of ``multiple``."""
    _, h, w = data.shape
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return data
    mode = "reflect" if h > ph and w > pw else "edge"
    return np.pad(data, ((0, 0), (0, ph), (0, pw)), mode=mode)


def scaled_size(size: int, scale: float) -> int:
    """A side resized by ``scale``, to the nearest multiple the model accepts (at least one)."""
    return max(INPUT_MULTIPLE_PX, INPUT_MULTIPLE_PX * round(size * scale / INPUT_MULTIPLE_PX))


class Predictor:
    """Runs the model on batches of normalised tiles; returns probabilities as numpy: (batch, h,
    w) for a one-output model, (batch, channels, h, w) for one with several (body, edge,
    contact: the settings' ``outputs``)."""

    def __init__(self, model: UNet11, device: torch.device, quarter_turns: int = 0,
                 flip_axis: int | None = None, precision: str = "auto", scales: tuple[float, ...] = (1.0,)):
        self.device = device
        # Multi-scale test-time augmentation: the tile is also resized by each scale (to a
        # multiple of 32), predicted, resized back and averaged in probability space, as the
        # SN6 winners did; costs about sum(scale²) times one pass.
        self.scales = tuple(scales) or (1.0,)
        # Test-time augmentation: average with the prediction of the image flipped along this
        # axis (one that keeps the look direction), as the SN6 winners did; twice the compute.
        self.flip_axis = flip_axis
        self.model = model.to(device, memory_format=torch.channels_last).eval()  # faster convolutions
        self.channels = model.final.out_channels
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch has the tile's shape: autotune once
        # Counter-clockwise quarter turns that present a tile the way the model was trained
        # (its look direction; 2 is SN6's orientation flag), undone on the probabilities.
        self.quarter_turns = quarter_turns % 4
        # The autocast dtype (None: float32) and, when the choice runs slowly here, why.
        self.autocast, self.precision_note = resolve_precision(device, precision)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._predict(batch)
        except torch.cuda.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            if len(batch) < 2:
                raise DeviceError(f"The GPU ran out of memory on a single {batch.shape[-2]} x {batch.shape[-1]} px "
                                  "tile: set a smaller Tile size (512 or 256) with Batch size 1, or Device cpu."
                                  ) from error
            # the card is full: the same tiles in two halves
            half = len(batch) // 2
            return np.concatenate([self(batch[:half]), self(batch[half:])])

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            x = x.pin_memory()  # page-locked, so the copy below runs asynchronously
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        if self.quarter_turns:
            x = torch.rot90(x, self.quarter_turns, dims=(-2, -1))
        probabilities = sum(self._at_scale(x, scale) for scale in self.scales) / len(self.scales)
        if self.quarter_turns:
            probabilities = torch.rot90(probabilities, -self.quarter_turns, dims=(-2, -1))
        return (probabilities[:, 0] if self.channels == 1 else probabilities).cpu().numpy()

    @property
    def passes_per_tile(self) -> float:
        """The model's compute per tile relative to one plain pass."""
        flips = 2 if self.flip_axis is not None else 1
        return flips * sum(scaled_size(1024, s) ** 2 / 1024 ** 2 for s in self.scales)

    def _at_scale(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        if scale == 1.0:
            return self._flip_averaged(x)
        size = x.shape[-2:]
        resized = F.interpolate(x, size=(scaled_size(size[0], scale), scaled_size(size[1], scale)),
                                mode="bilinear", align_corners=False)
        return F.interpolate(self._flip_averaged(resized), size=size, mode="bilinear", align_corners=False)

    def _flip_averaged(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = self._probabilities(x)
        if self.flip_axis is not None:
            flipped = self._probabilities(torch.flip(x, dims=(self.flip_axis,)))
            probabilities = 0.5 * (probabilities + torch.flip(flipped, dims=(self.flip_axis,)))
        return probabilities

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast):
                logits = self.model(x)
        else:
            logits = self.model(x)
        return torch.sigmoid(logits.float())
