"""What a model expects of its input and how its output is read: one record, one place.

The SpaceNet 6 baseline's values are the defaults, so a bare baseline state_dict (which
carries no metadata) is used exactly as the baseline used it (REFERENCE.md §2-3).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..defaults import DEFAULT_LABEL_EROSION_M, SN6_MIN_AREA_M2  # noqa: F401 - re-exported here

SN6_BAND_NAMES = ("HH", "HV", "VH", "VV")
# albumentations Normalize(mean=0.5, std=0.125, max_pixel_value=255) on every band.
SN6_NORMALISATION_MEAN = 127.5
SN6_NORMALISATION_STD = 31.875
SN6_PIXEL_SIZE_M = 0.5
SN6_THRESHOLD = 0.5

# Output channels a model may have, by name. The first channel is always the footprint
# probability ("building" for the SN6 baseline and the bundled model, "body" for an
# instance-aware model), so a reader that takes channel 0 keeps working with every model.
FOOTPRINT_OUTPUTS = ("building", "body")
EDGE_OUTPUT = "edge"        # a band along each footprint's outline
CONTACT_OUTPUT = "contact"  # the pixels between two touching footprints
KNOWN_OUTPUTS = FOOTPRINT_OUTPUTS + (EDGE_OUTPUT, CONTACT_OUTPUT)
# Watershed defaults for instance-aware models until a calibration sets them: a seed is a
# confident core (well above the footprint threshold once edges and contacts are taken out);
# a seed under 5 m² (20 px at 0.5 m) is more likely noise than a building of its own.
DEFAULT_SEED_THRESHOLD = 0.7
DEFAULT_MIN_SEED_AREA_M2 = 5.0


_TUPLE_FIELDS = ("band_names", "mean", "std", "outputs")  # lists in the metadata, tuples here


@dataclass(frozen=True)
class ModelSettings:
    """Architecture and pre-/post-processing of one checkpoint."""

    architecture: str = "UNet11"
    width: float = 1.0
    band_names: tuple[str, ...] = SN6_BAND_NAMES
    mean: tuple[float, ...] = (SN6_NORMALISATION_MEAN,) * 4
    std: tuple[float, ...] = (SN6_NORMALISATION_STD,) * 4
    pixel_size_m: float = SN6_PIXEL_SIZE_M
    threshold: float = SN6_THRESHOLD
    min_area_m2: float = SN6_MIN_AREA_M2
    # Metres by which the training masks were shrunk (every footprint eroded, so touching
    # buildings are separated by a clear gap); vectorising grows each blob back by as much.
    # 0 for the SN6 baseline, which learned full footprints.
    grow_m: float = 0.0
    # Average each tile's prediction with that of its copy flipped along the look direction
    # (twice the compute); a calibration may choose it (scripts/train_default_model.py).
    flip_average: bool = False
    # True when the model was trained on scenes rotated by 180 degrees relative to the
    # input's natural orientation (SN6: south-looking strips have orientation flag 1).
    rotate_180: bool = False
    look_direction: str = "north"
    input_scale: str = "sn6-intensity"
    # Names of the model's output channels, in order (KNOWN_OUTPUTS); the first is the
    # footprint. A checkpoint without the key is a one-channel model: ("building",).
    outputs: tuple[str, ...] = ("building",)
    # Marker-based watershed that splits touching buildings (postprocessing.instances), used
    # only when the model has an edge or contact channel: seeds are the pixels where
    # body * (1 - contact) * (1 - edge) exceeds seed_threshold, seed blobs under
    # min_seed_area_m2 are dropped, and the seeds grow inside the footprint mask (threshold).
    seed_threshold: float = DEFAULT_SEED_THRESHOLD
    min_seed_area_m2: float = DEFAULT_MIN_SEED_AREA_M2
    description: str = "SpaceNet 6 baseline settings"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bands(self) -> int:
        return len(self.band_names)

    @property
    def out_channels(self) -> int:
        return len(self.outputs)

    @property
    def splits_instances(self) -> bool:
        """Whether the model has channels that tell touching buildings apart (edge, contact),
        so extraction should run the watershed rather than a plain threshold."""
        return EDGE_OUTPUT in self.outputs or CONTACT_OUTPUT in self.outputs

    def output_index(self, name: str) -> int | None:
        """The channel of output ``name``, or None when the model does not have it."""
        return self.outputs.index(name) if name in self.outputs else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in _TUPLE_FIELDS:
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSettings":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = dict(kwargs.pop("extra", {}) or {})
        extra.update({k: v for k, v in data.items() if k not in known})
        for key in _TUPLE_FIELDS:
            if key in kwargs:
                value = kwargs[key]
                kwargs[key] = (value,) if isinstance(value, str) else tuple(value)
        return cls(**kwargs, extra=extra)

    def with_bands(self, bands: int) -> "ModelSettings":
        """The same settings for another band count (per-band values repeated or cut)."""
        if bands == self.bands:
            return self
        names = tuple(self.band_names[i] if i < self.bands else f"B{i + 1}" for i in range(bands))
        pick = lambda values: tuple(values[min(i, len(values) - 1)] for i in range(bands))  # noqa: E731
        return replace(self, band_names=names, mean=pick(self.mean), std=pick(self.std))
