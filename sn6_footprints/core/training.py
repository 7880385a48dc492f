"""Training a UNet11 on SAR rasters and footprint layers, with the SN6 baseline's recipe.

The recipe (REFERENCE.md §2): dice + 10 x focal loss on the logits, AdamW (lr 1e-4), random
crops, masks without buildings of 20 m² or less. Each raster is split spatially, not by
pixels: its bottom rows are the validation band, never seen in training, and after every
epoch the extraction pipeline itself (tiled prediction, vectorising) runs on that band and is
scored object by object with the SpaceNet F1. The best epoch's checkpoint is kept, with the
metadata extraction needs; a sidecar ``<output>.resume.pt`` lets a run continue.

Every raster is read through the same input plan as extraction (:mod:`.reading`): its bands
mapped to the model's, its values converted to the model's scale, resampled onto the model's
north-up grid at the model's pixel size, and its crops turned by quarter turns so that it
looks the model's way. A user fine-tunes on a product as it comes, and the model learns what
extraction will show it.

Augmentation respects SAR geometry: layover and shadow lie along the look direction, so the
only flip is the one that keeps it (left-right for a north/south-looking model); an up-down
flip or a 180° rotation would teach the model buildings leaning the wrong way.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import rasterio
import shapely
import torch
import torch.nn.functional as F
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy import ndimage

from .devices import autocast_dtype, describe, resolve_device
from .extract import ExtractionResult, score_extraction
from .feedback import Feedback, SubFeedback
from .engine.predictor import Predictor, normalise
from .engine.stream import run_engine
from .engine.tiling import TilingOptions
from .model import INPUT_MULTIPLE_PX, UNet11
from .radiometry import SCALE_LABELS
from .radiometry.scales import BANDS as SN6_BANDS
from .raster_windows import RasterError, RasterInfo, look_preserving_flip_axis
from .reading import InputOptions, InputPlan, plan_input
from .reading.bands import polarisation_of
from .reading.ground import ground_pixel
from .reading.model_windows import ModelWindows
from .reading.plan import check_placeable, model_scale_of
from .settings import (CONTACT_OUTPUT, DEFAULT_LABEL_EROSION_M, EDGE_OUTPUT, SN6_MIN_AREA_M2, SN6_THRESHOLD,
                       ModelSettings)
from .vector_io import FootprintTable
from .vectorize import BlobCollector, InstanceCollector, VectorizeOptions
from .weights import WeightsError, atomic_torch_save, load_model, outputs_problem, save_model

LOOK_DIRECTIONS = ("north", "south", "east", "west")
NORMALISATIONS = ("auto", "sn6", "per-band")
RESUME_SUFFIX = ".resume.pt"
RESUME_FORMAT = "sn6_footprints-resume/1"
BUNDLED = "bundled"  # initial_model value meaning the checkpoint shipped with the plugin
_STRIP_ROWS = 1024   # rows per read when caching a training region
_STAT_TILES = 64     # random tiles for per-band mean/std
# Width of the edge channel's target: building pixels within this many pixels (8-neighbour
# steps) of another building or of the background.
EDGE_WIDTH_PX = 2

LabelSource = Union[str, os.PathLike, FootprintTable]


class TrainingError(ValueError):
    """A run that cannot go on; the message says what to change."""


@dataclass(frozen=True)
class TrainingOptions:
    """Everything a training run may set. Defaults: the SN6 baseline recipe, a CPU-sized model."""

    width: float = 0.25                   # channel multiplier (1 = the SN6 baseline, 0.25 the bundled model)
    initial_model: str | None = None      # checkpoint to fine-tune, "bundled", or None (random init)
    tile_size_px: int = 256               # training crop side, multiple of 32
    batch_size: int = 8
    epochs: int = 10                      # total epochs (a resumed run continues up to this)
    steps_per_epoch: int | None = None    # None: about one pass over the training area
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"         # or "cosine": decays to 0 over all epochs (resumable: a function of the step)
    weight_decay: float = 0.01            # AdamW's default
    validation_share: float = 0.2         # bottom share of each raster's rows; 0: no validation
    device: str = "auto"
    resume: bool = False
    resume_file: str | None = None        # where the resume state lives; None: <output>.resume.pt
    seed: int = 0
    normalisation: str = "auto"           # auto: the initial model's, else sn6; or per-band stats
    look_direction: str | None = None     # the model's; None: the initial model's, else north
    # per raster; None = input.look_direction (auto: its LOOK_DIRECTION tag, else the model's)
    raster_look_directions: tuple[str | None, ...] | None = None
    # how every raster is read, as extraction reads it: scale, band order, nodata, resampling
    input: InputOptions = InputOptions()
    pixel_size_m: float | None = None     # the model's; None: the initial model's, else the first raster's
    label_min_area_m2: float = SN6_MIN_AREA_M2  # footprints this small or smaller stay out of the masks
    # Every footprint is shrunk by this many metres in the masks (None: the initial model's,
    # else DEFAULT_LABEL_EROSION_M); extraction grows blobs back by as much.
    label_erosion_m: float | None = None
    # Extra focal-loss weight of the pixels where touching footprints meet (0: none): 4 makes a
    # pixel of the gap between two touching buildings count 5 times.
    contact_weight: float = 0.0
    # The model's output channels (ModelSettings.outputs): ("building",) is today's one-channel
    # model; ("body", "edge", "contact") adds an edge band and the contact zone between touching
    # buildings as targets, each with the same dice + focal loss, for the watershed to split on.
    # None: the initial model's outputs (fine-tuning an instance-aware model keeps it one), else
    # ("building",).
    outputs: tuple[str, ...] | None = None
    # Fine-tuning a one-channel model into an instance-aware one: train only the new output
    # channels' final 1x1 weights, so the footprint channel stays exactly the initial model's
    # (extraction without the watershed gives its results) and only the splitting is new.
    train_only_new_outputs: bool = False
    threshold: float = SN6_THRESHOLD
    focal_weight: float = 10.0
    focal_gamma: float = 2.0
    augment: bool = True
    mixed_precision: bool = True          # bf16/fp16 autocast on CUDA, bf16 on CPUs that have it
    cache_limit_mb: float = 1024.0        # training regions up to this size are held in RAM
    description: str | None = None        # what the data is, for the checkpoint's metadata

    def outputs_from(self, start: ModelSettings | None) -> tuple[str, ...]:
        """The run's output channels: as set, else the initial model's, else one footprint channel."""
        if self.outputs is not None:
            return tuple(self.outputs)
        return tuple(start.outputs) if start is not None else ModelSettings().outputs

    def check(self) -> None:
        if not 0 < self.width <= 4:
            raise ValueError(f"Width {self.width} must be in (0, 4]; 1 is the SN6 baseline, 0.25 the bundled model.")
        if self.tile_size_px < INPUT_MULTIPLE_PX or self.tile_size_px % INPUT_MULTIPLE_PX:
            raise ValueError(f"Tile size {self.tile_size_px} px must be a multiple of {INPUT_MULTIPLE_PX} "
                             "(the SN6 baseline trains on 512 px crops).")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ').capitalize()} must be at least 1.")
        if self.train_only_new_outputs and (len(self.outputs or ()) < 2 or not self.initial_model):
            raise ValueError("Training only the new outputs needs an instance-aware model (outputs body, edge, "
                             "contact) fine-tuned from a one-channel one: set the outputs and an initial model.")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError("Steps per epoch must be at least 1 (or empty for one pass over the data).")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"Learning-rate schedule {self.lr_schedule!r}: choose 'constant' or 'cosine'.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"Learning rate {self.learning_rate} must be a positive number (default 1e-4).")
        if not 0 <= self.validation_share < 1:
            raise ValueError(f"Validation share {self.validation_share} must be in [0, 1) (default 0.2).")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"Normalisation {self.normalisation!r}: choose one of {', '.join(NORMALISATIONS)}.")
        if self.label_erosion_m is not None and not 0 <= self.label_erosion_m <= 5:
            raise ValueError(f"Label erosion {self.label_erosion_m} m must be in [0, 5] "
                             f"(default {DEFAULT_LABEL_EROSION_M:g} m; 0 learns whole footprints).")
        if not 0 <= self.contact_weight <= 50:
            raise ValueError(f"Contact weight {self.contact_weight} must be in [0, 50] (0: off).")
        problem = self.outputs is not None and outputs_problem(ModelSettings(outputs=tuple(self.outputs)))
        if problem:
            raise ValueError(f"Outputs {', '.join(map(str, self.outputs)) or '(none)'}: {problem}; choose "
                             "('building',) or ('body', 'edge', 'contact').")
        if not self.cache_limit_mb >= 0:
            raise ValueError(f"Cache limit {self.cache_limit_mb} MB must be 0 or more (0: read every crop from disk).")
        for look in (self.look_direction, *(self.raster_look_directions or ())):
            if look is not None and look not in LOOK_DIRECTIONS:
                raise ValueError(f"Look direction {look!r}: choose one of {', '.join(LOOK_DIRECTIONS)}.")
        if self.pixel_size_m is not None and not (0 < self.pixel_size_m <= 100 and math.isfinite(self.pixel_size_m)):
            raise ValueError(f"Model pixel size {self.pixel_size_m} m must be a positive number of metres (at most "
                             "100; empty: the initial model's, else the first raster's; SN6: 0.5).")
        self.input.check()


@dataclass
class EpochRecord:
    """One epoch of the log: mean training loss and, with validation, the object-level score."""

    epoch: int
    loss: float
    steps: int
    seconds: float
    val_f1: float | None = None
    val_precision: float | None = None
    val_recall: float | None = None
    val_iou: float | None = None  # area IoU of all predicted vs all true footprints
    val_tp: int | None = None
    val_fp: int | None = None
    val_fn: int | None = None


@dataclass
class TrainingResult:
    output_path: Path
    best_epoch: int | None
    best_f1: float | None
    epochs: int                      # epochs completed in total (resumed ones included)
    history: list[EpochRecord]
    settings: ModelSettings | None   # the best checkpoint's metadata
    seconds: float


# ---------------------------------------------------------------- the model's input and the plans

def _scale_label(scale: str) -> str:
    """A scale as checkpoints record it (SN6's as the baseline's metadata spells it)."""
    return ModelSettings().input_scale if scale == "sn6" else scale


def _sn6_normalised(settings: ModelSettings) -> ModelSettings:
    sn6 = ModelSettings()
    return replace(settings, mean=(sn6.mean[0],) * settings.bands, std=(sn6.std[0],) * settings.bands,
                   input_scale=sn6.input_scale)


def _new_band_names(dataset, band_order) -> tuple[str, ...]:
    """A new model's bands: the polarisations (else the descriptions) of the raster bands it reads
    (Band order's, else all in order); the default names where they name nothing unique."""
    from .reading.bands import map_bands

    indexes = tuple(range(1, dataset.count + 1))
    if band_order:  # checked as extraction checks it (bands that exist, none twice)
        indexes = map_bands(list(dataset.descriptions), ModelSettings().with_bands(len(band_order)).band_names,
                            band_order, Path(str(dataset.name)).name).indexes
    descriptions = [dataset.descriptions[b - 1] for b in indexes]
    for names in ([polarisation_of(d) for d in descriptions], descriptions):
        if all(names) and len(set(names)) == len(names):
            return tuple(names)
    return ModelSettings().with_bands(len(indexes)).band_names


def model_look(options: TrainingOptions, start: ModelSettings | None, resumed: bool = False) -> str:
    """The model's look: a resumed run's, else Look direction, else the initial model's, else north."""
    if resumed:
        return start.look_direction
    return options.look_direction or (start.look_direction if start is not None else "north")


def target_settings(first_dataset, options: TrainingOptions, start: ModelSettings | None,
                    resumed: bool = False) -> ModelSettings:
    """The settings every raster is read into, decided before any region opens: bands, input
    scale, pixel size and look. ``start``: a resumed run's settings (kept as they are) or the
    initial model's (its scale, bands and pixel size unless Model pixel size is set); a new
    model takes the first raster's bands and ground pixel size, and the SN6 scale, or with
    per-band normalisation the first raster's own scale, to which every raster is converted."""
    if resumed:
        return start
    look = model_look(options, start)
    if start is not None:
        settings = replace(start, input_scale=_scale_label(model_scale_of(start)), look_direction=look,
                           pixel_size_m=float(options.pixel_size_m or start.pixel_size_m))
        return _sn6_normalised(settings) if options.normalisation == "sn6" else settings
    from .radiometry.detect import decide_scale
    from .reading.bands import map_bands

    names = _new_band_names(first_dataset, options.input.band_order)
    pixel = options.pixel_size_m or round(ground_pixel(first_dataset.transform, first_dataset.width,
                                                       first_dataset.height, first_dataset.crs.to_wkt()).size_m, 6)
    settings = _sn6_normalised(ModelSettings(band_names=names, pixel_size_m=float(pixel), look_direction=look))
    if options.normalisation == "per-band":
        bands = map_bands(list(first_dataset.descriptions), names, options.input.band_order,
                          Path(str(first_dataset.name)).name)
        decision = decide_scale(first_dataset, bands.indexes, options.input.input_scale,
                                zero_is_nodata=options.input.zero_is_nodata)
        settings = replace(settings, input_scale=_scale_label(decision.scale))
    return settings


def raster_input_options(options: TrainingOptions, index: int) -> InputOptions:
    """Raster ``index``'s input options: the shared ones, with its own look where given."""
    looks = options.raster_look_directions
    look = (looks[index] if looks else None) or options.input.look_direction
    return replace(options.input, look_direction=look)


def plan_rasters(datasets: Sequence, names: Sequence[str], options: TrainingOptions, start: ModelSettings | None,
                 resumed: bool = False) -> tuple[ModelSettings, list[InputPlan]]:
    """The model's target settings and each open raster's input plan; what cannot be read
    correctly is refused here, with extraction's messages."""
    looks = options.raster_look_directions
    if looks and len(looks) != len(datasets):
        raise ValueError(f"{len(looks)} look direction(s) for {len(datasets)} raster(s).")
    for dataset, name in zip(datasets, names):
        check_placeable(dataset.width, dataset.height, dataset.crs, name)
    target = target_settings(datasets[0], options, start, resumed)
    plans = []
    for index, (dataset, name) in enumerate(zip(datasets, names)):
        plan = plan_input(dataset, target, raster_input_options(options, index), name)
        if (plan.source_scale, plan.gain) != (plan.model_scale, 1.0) and plan.model_scale == "sn6" \
                and not set(b.upper() for b in target.band_names) <= set(SN6_BANDS):
            raise RasterError(f"{name} is {SCALE_LABELS[plan.source_scale]}, but the SN6 scale is defined for the "
                              f"bands {', '.join(SN6_BANDS)}, not {', '.join(target.band_names)}: set Normalisation "
                              "to per-band (--normalisation per-band), which trains on the rasters' own scale.")
        plans.append(plan)
    return target, plans


def check_training_rasters(rasters: Sequence, options: TrainingOptions, start: ModelSettings | None,
                           resumed: bool = False) -> tuple[ModelSettings, list[InputPlan]]:
    """:func:`plan_rasters` on raster files (validation's check before the heavy work)."""
    with ExitStack() as stack:
        datasets = [stack.enter_context(rasterio.open(path)) for path in rasters]
        return plan_rasters(datasets, [Path(str(path)).name for path in rasters], options, start, resumed)


# ---------------------------------------------------------------- spatial split and labels

def validation_split_row(height_px: int, validation_share: float) -> int:
    """First row of the validation band: rows above it train, rows from it on validate."""
    if validation_share <= 0:
        return height_px
    validation_rows = int(round(height_px * validation_share))
    return height_px - validation_rows


def pixel_polygon(window: Window, transform) -> shapely.Polygon:
    """A window's outline in map coordinates (exact for rotated geotransforms too)."""
    r0, c0 = window.row_off, window.col_off
    r1, c1 = r0 + window.height, c0 + window.width
    return shapely.Polygon([transform * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])


def grid_outline(grid) -> shapely.Polygon:
    return pixel_polygon(Window(0, 0, grid.width, grid.height), grid.transform)

def load_footprints(source: LabelSource, info: RasterInfo, raster_name: str = "the raster",
                    feedback: Feedback | None = None) -> list:
    """The label polygons of one raster in its CRS, read as every path reads ground truth
    (:mod:`.truth`): polygon layers only (any CRS), or a SpaceNet pixel CSV placed with the
    raster's geotransform; invalid polygons repaired with ``make_valid`` and counted in the log."""
    from .truth import PolygonLayer, check_polygons, read_raster_truth, repair_polygons, report_repairs

    feedback = feedback or Feedback()
    if not isinstance(source, FootprintTable):
        return read_raster_truth(source, info, raster_name, what="label", feedback=feedback).geometries
    check_polygons(source.geometries, "the label layer")
    geometries = source.geometries
    if info.crs_wkt and source.crs_wkt:
        from .vector_io import reproject
        geometries = reproject([g for g in geometries if g is not None], source.crs_wkt, info.crs_wkt)
    geometries, repaired, emptied = repair_polygons(geometries)
    report_repairs(PolygonLayer(Path("label layer"), geometries, repaired=repaired, emptied=emptied), "label", feedback)
    return [g for g in geometries if g is not None and not g.is_empty]


def _refuse_empty_labels(regions: list, labels: Sequence) -> None:
    """No footprint on any raster: refused before training (the model would learn that there are
    no buildings); one raster without footprints among others is a plain negative example."""
    from .truth import TruthError

    on_raster = [sum(1 for g in shapely.intersects(grid_outline(r.grid), r.footprints).tolist() if g)
                 if r.footprints else 0 for r in regions]
    if sum(on_raster) == 0:
        named = ", ".join(f"{_name(label)}: {len(r.footprints)} polygon(s), {n} on {Path(str(r.path)).name}"
                          for label, r, n in zip(labels, regions, on_raster))
        raise TruthError(f"No label polygons lie on the training raster(s) ({named}): choose the building "
                         "footprint polygons of these rasters (in any CRS) before training")


def _name(source) -> str:
    return Path(str(source)).name if not isinstance(source, FootprintTable) else "layer"


def learning_rate_at(options: "TrainingOptions", step: int, total_steps: int) -> float:
    """The learning rate of a global step: constant, or a cosine decay to zero at the last step."""
    if options.lr_schedule == "cosine" and total_steps > 0:
        return options.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return options.learning_rate


def contact_pixels(ids: np.ndarray) -> np.ndarray:
    """Building pixels next to a pixel of another building (4-neighbours): where two meet."""
    building = ids > 0
    vertical = building[1:] & building[:-1] & (ids[1:] != ids[:-1])
    horizontal = building[:, 1:] & building[:, :-1] & (ids[:, 1:] != ids[:, :-1])
    contact = np.zeros(ids.shape, bool)
    contact[1:] |= vertical
    contact[:-1] |= vertical
    contact[:, 1:] |= horizontal
    contact[:, :-1] |= horizontal
    return contact


def separate_touching(ids: np.ndarray) -> np.ndarray:
    """Binary mask from a raster of building ids with the pixels where two buildings meet set
    to background: the model learns to leave a gap between touching buildings, so each
    becomes its own polygon (the SN6 winners' contact channel, reduced to the mask)."""
    return ((ids > 0) & ~contact_pixels(ids)).astype(np.uint8)


def edge_band(ids: np.ndarray, width_px: int = EDGE_WIDTH_PX) -> np.ndarray:
    """Building pixels within ``width_px`` (8-neighbour steps) of a pixel of another id, the
    background or another building: each footprint's outline, the edge channel's target."""
    size = 2 * width_px + 1
    low = ndimage.minimum_filter(ids, size=size, mode="nearest")
    high = ndimage.maximum_filter(ids, size=size, mode="nearest")
    return (ids > 0) & (low != high)



class SceneRegion:
    """The training region of one raster (the model-grid rows above its validation band) and its labels.

    Everything is in pixels of the plan's model grid: crops are read through
    :class:`ModelWindows` (bands mapped, values on the model's scale, resampled where the plan
    says), labels are rasterised with the grid's transform, and every crop is turned by the
    plan's quarter turns (as :class:`Predictor` turns tiles) so that it looks the model's way.
    The region is held in RAM when ``cached`` (one read, crops are slices), else every crop is
    one windowed read from the open file.
    """

    def __init__(self, dataset, path, plan: InputPlan, footprints: list, split_row: int,
                 label_min_area_m2: float, label_erosion_m: float = 0.0, contact_weight: float = 0.0,
                 outputs: tuple[str, ...] = ("building",)):
        self.dataset = dataset
        self.path = str(path)
        self.plan = plan
        self.grid = plan.grid
        self.windows = ModelWindows(dataset, plan)
        self.bands = len(plan.band_names)
        self.split_row = split_row
        self.footprints = footprints  # every polygon, for the validation score
        m2_per_unit = self.grid.pixel_area_m2 / abs(self.grid.transform.determinant)
        whole = [g for g in footprints if g.area * m2_per_unit > label_min_area_m2]
        erosion_px = label_erosion_m / self.grid.pixel_size_m
        kept = whole
        if label_erosion_m > 0:
            kept = [g.buffer(-label_erosion_m / math.sqrt(m2_per_unit), join_style="mitre") for g in whole]
            kept = [g for g in kept if not g.is_empty]
        self.mask_footprints = kept  # what the masks show: footprints, shrunk by the erosion
        self._tree = shapely.STRtree(self.mask_footprints)
        self.contact_weight = contact_weight
        self.outputs = tuple(outputs)
        # from the two pixel columns of a shared wall, the zone reaches across the eroded gap
        # and one pixel into each core
        self.contact_radius_px = int(math.ceil(erosion_px - 1e-9))
        # the whole footprints, for the contact zone; only when it is weighted or a target
        self._whole = (whole, shapely.STRtree(whole)) \
            if contact_weight > 0 or CONTACT_OUTPUT in self.outputs else None
        self.image: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.valid: np.ndarray | None = None
        self.zone: np.ndarray | None = None

    @property
    def training_pixels(self) -> int:
        return self.split_row * self.grid.width

    @property
    def cache_bytes(self) -> int:
        return self.training_pixels * (4 * self.bands + 1 + len(self.outputs) + (self.contact_weight > 0))

    def _ids(self, polygons: list, tree, window: Window, pad: int) -> np.ndarray | None:
        """Raster of polygon ids (1-based) over ``window`` grown by ``pad`` px; None when empty."""
        grown = Window(window.col_off - pad, window.row_off - pad, window.width + 2 * pad, window.height + 2 * pad)
        candidates = tree.query(pixel_polygon(grown, self.grid.transform))
        if len(candidates) == 0:
            return None
        return rasterize(((polygons[i], int(n) + 1) for n, i in enumerate(candidates)),
                         out_shape=(int(grown.height), int(grown.width)), fill=0, dtype="int32",
                         transform=window_transform(grown, self.grid.transform))

    def rasterise(self, window: Window) -> np.ndarray:
        """The building mask of a window: pixel centres inside a (shrunk) footprint are building,
        except where two footprints touch (see :func:`separate_touching`)."""
        ids = self._ids(self.mask_footprints, self._tree, window, 1)
        if ids is None:
            return np.zeros((int(window.height), int(window.width)), np.uint8)
        return separate_touching(ids)[1:-1, 1:-1]

    def targets(self, window: Window) -> np.ndarray:
        """The training target of a window: the mask (h, w) of :meth:`rasterise` for a
        one-output model, else one uint8 plane per output (outputs, h, w): the mask for the
        footprint channel, :func:`edge_band` of the (shrunk) footprints for "edge", the
        :meth:`contact_zone` for "contact"."""
        mask = self.rasterise(window)
        if len(self.outputs) == 1:
            return mask
        planes = []
        for name in self.outputs:
            if name == EDGE_OUTPUT:
                pad = EDGE_WIDTH_PX
                ids = self._ids(self.mask_footprints, self._tree, window, pad)
                planes.append(np.zeros_like(mask) if ids is None else edge_band(ids)[pad:-pad, pad:-pad])
            elif name == CONTACT_OUTPUT:
                planes.append(self.contact_zone(window))
            else:
                planes.append(mask)
        return np.stack(planes).astype(np.uint8)

    def contact_zone(self, window: Window) -> np.ndarray:
        """Pixels within ``contact_radius_px`` of a wall two whole footprints share: the gap the
        model must learn to leave between touching buildings (weighted in the loss, as the
        U-Net paper weights the borders between touching cells)."""
        shape = (int(window.height), int(window.width))
        pad = self.contact_radius_px + 1
        ids = self._ids(*self._whole, window, pad) if self._whole else None
        if ids is None:
            return np.zeros(shape, bool)
        zone = contact_pixels(ids)
        if self.contact_radius_px > 0:  # (0 iterations would dilate until nothing changes)
            zone = ndimage.binary_dilation(zone, iterations=self.contact_radius_px, structure=np.ones((3, 3), bool))
        return zone[pad:-pad, pad:-pad]

    def cache(self) -> None:
        """Read the whole training region into RAM, strip by strip."""
        width = self.grid.width
        self.image = np.empty((self.bands, self.split_row, width), np.float32)
        self.valid = np.empty((self.split_row, width), bool)
        for top in range(0, self.split_row, _STRIP_ROWS):
            rows = min(_STRIP_ROWS, self.split_row - top)
            data, valid = self.windows.read(Window(0, top, width, rows))
            self.image[:, top:top + rows], self.valid[top:top + rows] = data, valid
        self.mask = self.targets(Window(0, 0, width, self.split_row))
        if self.contact_weight > 0:
            self.zone = self.contact_zone(Window(0, 0, width, self.split_row))

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, ...]:
        """(image on the model's scale (bands, h, w), mask (h, w) uint8 (a model with several
        outputs: its :meth:`targets`, (outputs, h, w)), valid (h, w) bool, loss weight (h, w)
        float32: 0 off the valid pixels, 1 + ``contact_weight`` in the contact zone) of a
        model-grid crop, turned by the plan's quarter turns (h and w swap when odd)."""
        window = Window(col, row, width, height)
        if self.image is not None:
            rows, cols = slice(row, row + height), slice(col, col + width)
            image, mask, valid = self.image[:, rows, cols].copy(), self.mask[..., rows, cols], self.valid[rows, cols]
            zone = self.zone[rows, cols] if self.zone is not None else None
        else:
            image, valid = self.windows.read(window)
            mask = self.targets(window)
            zone = self.contact_zone(window) if self.contact_weight > 0 else None
        weight = valid.astype(np.float32)
        if zone is not None:
            weight *= 1.0 + self.contact_weight * zone
        turns = self.plan.quarter_turns
        if turns:  # counter-clockwise, as Predictor's torch.rot90 turns the tiles of extraction
            image, mask, valid, weight = (np.rot90(a, turns, axes=(-2, -1)) for a in (image, mask, valid, weight))
        return image, mask, valid, weight


class TrainingData:
    """Random training crops from the training regions of several rasters, on the model's
    input (:attr:`settings`: bands, scale, pixel size, look; mean and std not yet final).

    Both the crop positions and the flips come from the caller's generator, so a seed fixes
    the batches, cached or not.
    """

    def __init__(self, regions: list[SceneRegion], settings: ModelSettings, tile_size_px: int,
                 flip_axis: int | None, cached: bool):
        self.regions = regions
        self.settings = settings
        self.tile_size_px = tile_size_px
        self.flip_axis = flip_axis  # -1: left-right (north/south-looking model); -2: up-down (east/west)
        self.cached = cached
        pixels = np.array([r.training_pixels for r in regions], float)
        self._region_weights = pixels / pixels.sum()

    @classmethod
    def open(cls, rasters: Sequence, labels: Sequence[LabelSource], options: TrainingOptions,
             start: ModelSettings | None, stack: ExitStack, feedback: Feedback | None = None,
             resumed: bool = False) -> "TrainingData":
        """Open every raster (kept open on ``stack``), plan it into the model's input
        (:func:`plan_rasters`; ``start``: the resumed run's or initial model's settings, None
        for a new model), read its labels, split it, maybe cache it."""
        feedback = feedback or Feedback()
        if len(rasters) == 0:
            raise ValueError("No training raster given; give at least one SAR raster with its footprint layer.")
        if len(rasters) != len(labels):
            raise ValueError(f"{len(rasters)} raster(s) but {len(labels)} footprint layer(s): give one "
                             "footprint layer per raster, in the same order.")
        datasets = [stack.enter_context(rasterio.open(path)) for path in rasters]
        names = [Path(str(path)).name for path in rasters]
        settings, plans = plan_rasters(datasets, names, options, start, resumed)
        regions = []
        for path, dataset, name, plan, label_source in zip(rasters, datasets, names, plans, labels):
            feedback.check_cancelled()
            grid = plan.grid
            split_row = validation_split_row(grid.height, options.validation_share)
            if split_row < INPUT_MULTIPLE_PX:
                raise RasterError(f"{name} leaves {split_row} training rows (height {grid.height} px on the model's "
                                  f"grid, validation share {options.validation_share:g}); lower the validation "
                                  f"share or use a taller raster (at least {INPUT_MULTIPLE_PX} training rows).")
            if 0 < grid.height - split_row < INPUT_MULTIPLE_PX:
                raise RasterError(f"{name}'s validation band would be {grid.height - split_row} rows; raise the "
                                  f"validation share to at least {INPUT_MULTIPLE_PX / grid.height:.2f} or set it to 0.")
            footprints = load_footprints(label_source, RasterInfo.of(dataset), name, feedback)
            regions.append(SceneRegion(dataset, path, plan, footprints, split_row, options.label_min_area_m2,
                                       options.label_erosion_m or 0.0, options.contact_weight,
                                       options.outputs_from(start)))
        _refuse_empty_labels(regions, labels)
        total_mb = sum(r.cache_bytes for r in regions) / 2 ** 20
        cached = total_mb <= options.cache_limit_mb
        for region in regions:
            feedback.check_cancelled()
            if cached:
                region.cache()
        flip_axis = look_preserving_flip_axis(settings.look_direction) if options.augment else None
        data = cls(regions, settings, options.tile_size_px, flip_axis, cached)
        for region in regions:
            grid, plan = region.grid, region.plan
            dropped = len(region.footprints) - len(region.mask_footprints)
            for line in plan.log_lines():
                feedback.info(f"{plan.raster_name}: {line}")
            turned = f"; crops turned {90 * plan.quarter_turns}° counter-clockwise to look {plan.model_look}" \
                if plan.quarter_turns else ""
            grid_text = "" if plan.reads_as_is else \
                f" (raster {region.dataset.width} x {region.dataset.height} px, resampled)"
            feedback.info(f"{plan.raster_name}: {grid.width} x {grid.height} px at {grid.pixel_size_m:.3g} m"
                          f"{grid_text}, {region.bands} band(s); training rows 0–{region.split_row}, validation "
                          f"rows {region.split_row}–{grid.height}; {len(region.footprints)} footprint(s), {dropped} "
                          f"of ≤ {options.label_min_area_m2:g} m² left out of the masks{turned}")
        feedback.info(f"Training regions: {total_mb:.0f} MB, " + (
            "held in RAM" if cached else f"read window by window (over the {options.cache_limit_mb:g} MB cache limit)"))
        return data

    @property
    def bands(self) -> int:
        return self.settings.bands

    @property
    def training_pixels(self) -> int:
        return sum(r.training_pixels for r in self.regions)

    def sample_tile(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """One random crop (image, mask, valid, loss weight; see :meth:`SceneRegion.read`),
        padded to the tile size where the region is smaller, then maybe flipped along the
        model's look-preserving axis."""
        region = self.regions[int(rng.choice(len(self.regions), p=self._region_weights))]
        tile = self.tile_size_px
        height, width = min(tile, region.split_row), min(tile, region.grid.width)
        row = int(rng.integers(0, region.split_row - height + 1))
        col = int(rng.integers(0, region.grid.width - width + 1))
        arrays = region.read(row, col, height, width)
        shape = arrays[2].shape
        if shape != (tile, tile):
            pad = ((0, tile - shape[0]), (0, tile - shape[1]))
            arrays = tuple(np.pad(a, ((0, 0),) * (a.ndim - 2) + pad) for a in arrays)
        if self.flip_axis is not None and rng.random() < 0.5:
            arrays = tuple(np.flip(a, self.flip_axis) for a in arrays)
        return arrays

    def sample_batch(self, rng: np.random.Generator, batch_size: int, settings: ModelSettings):
        """(normalised images (B, bands, T, T), masks (B, outputs, T, T), loss weights (B, 1, T, T)), float32."""
        tiles = [self.sample_tile(rng) for _ in range(batch_size)]
        images = normalise(np.stack([t[0] for t in tiles]).astype(np.float32, copy=False), settings)
        masks = np.stack([t[1] for t in tiles])
        masks = (masks[:, None] if masks.ndim == 3 else masks).astype(np.float32)
        weights = np.stack([t[3] for t in tiles])[:, None].astype(np.float32, copy=False)
        return images, masks, weights

    def band_statistics(self, rng: np.random.Generator, tiles: int = _STAT_TILES) -> tuple[tuple, tuple]:
        """Per-band mean and std over the valid pixels of random training crops."""
        total = np.zeros(self.bands)
        squares = np.zeros(self.bands)
        count = 0
        for _ in range(tiles):
            image, _mask, valid, _weight = self.sample_tile(rng)
            values = image[:, valid].astype(np.float64)
            total += values.sum(axis=1)
            squares += (values ** 2).sum(axis=1)
            count += values.shape[1]
        if count == 0:
            raise RasterError("The training regions hold no valid pixels (all nodata): nothing to learn from.")
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-12))
        return tuple(round(float(m), 6) for m in mean), tuple(round(float(max(s, 1e-6)), 6) for s in std)


# ---------------------------------------------------------------- loss

def dice_focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                    focal_weight: float = 10.0, gamma: float = 2.0, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice over the batch + ``focal_weight`` x focal loss (γ = ``gamma``, no α), both on
    logits and over valid pixels only (weight 0: padding and nodata teach nothing). The focal
    term is weighted per pixel by ``weight`` (the contact zone counts more); dice is not."""
    logits = logits.float()
    valid = (weight > 0).to(logits.dtype)
    probability = torch.sigmoid(logits)
    intersection = (probability * target * valid).sum()
    dice = 1 - (2 * intersection + smooth) / ((probability * valid).sum() + (target * valid).sum() + smooth)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = probability * target + (1 - probability) * (1 - target)
    focal = ((1 - p_true) ** gamma * bce * weight).sum() / valid.sum().clamp_min(1.0)
    return dice + focal_weight * focal


def outputs_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                 focal_weight: float = 10.0, gamma: float = 2.0) -> torch.Tensor:
    """The recipe's loss on every output channel, summed: one channel is exactly
    :func:`dice_focal_loss`; edge and contact add their own terms (dice per channel, so a
    sparse edge or contact target is not drowned by the footprints)."""
    if logits.shape[1] == 1:
        return dice_focal_loss(logits, targets, weight, focal_weight, gamma)
    return sum(dice_focal_loss(logits[:, c:c + 1], targets[:, c:c + 1], weight, focal_weight, gamma)
               for c in range(logits.shape[1]))


# ---------------------------------------------------------------- validation

class ValidationSet:
    """The validation bands: the model-grid rows below each region's split, read through the
    region's own plan (its grid cut to those rows), with the true footprints clipped to the
    band. The extraction pipeline runs on each and is scored against them."""

    def __init__(self, regions: list[SceneRegion]):
        self.bands = []
        for region in regions:
            grid = region.grid
            rows = grid.height - region.split_row
            if rows <= 0:
                continue
            band = replace(grid, height=rows, transform=grid.transform * Affine.translation(0, region.split_row),
                           is_raster_grid=False)
            # The band is a sub-grid of the model grid: ModelWindows reads it as the region's plan
            # says (the raster's own pixels from the split row on, or warped with its resampling).
            plan = replace(region.plan, grid=band)
            outline = grid_outline(band)
            truth = [g.intersection(outline) for g in region.footprints if g.intersects(outline)]
            self.bands.append((region.path, plan, [g for g in truth if not g.is_empty]))

    def __bool__(self) -> bool:
        return bool(self.bands)

    def evaluate(self, model: UNet11, device: torch.device, settings: ModelSettings,
                 tiling: TilingOptions, feedback: Feedback) -> dict:
        """Object-level SpaceNet counts pooled over the bands, and the area IoU."""
        tp = fp = fn = 0
        intersection = union = 0.0
        for index, (path, plan, truth) in enumerate(self.bands):
            sub = SubFeedback(feedback, 100.0 * index / len(self.bands), 100.0 * (index + 1) / len(self.bands))
            predictor = Predictor(model, device, quarter_turns=plan.quarter_turns)
            grid = plan.grid
            vectorize = VectorizeOptions.for_model(settings, grid, 0.5 * grid.pixel_size_m)  # 0.5 px
            # as extraction vectorises: an instance-aware model's buildings split by its watershed
            collector = (InstanceCollector.for_settings(grid, vectorize, settings) if settings.splits_instances
                         else BlobCollector.for_options(grid, vectorize))
            run_engine(path, predictor, settings, plan, [("vectorize", collector.add)], tiling, SubFeedback(sub, 0, 90))
            geometries, attributes = collector.polygons(grid, vectorize, SubFeedback(sub, 90, 100))
            result = ExtractionResult(geometries, attributes, grid.crs_wkt, settings, "")
            report = score_extraction(result, truth)
            tp, fp, fn = tp + report.tp, fp + report.fp, fn + report.fn
            predicted, true = shapely.union_all(geometries), shapely.union_all(truth)
            intersection += predicted.intersection(true).area
            union += predicted.union(true).area
        model.train()
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        return dict(val_f1=f1, val_precision=precision, val_recall=recall,
                    val_iou=intersection / union if union > 0 else 0.0, val_tp=tp, val_fp=fp, val_fn=fn)


# ---------------------------------------------------------------- checkpoints

def resume_path_for(output_path) -> Path:
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + RESUME_SUFFIX)


def _load_resume(path: Path) -> dict:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"The resume file {path.name} cannot be read ({type(exc).__name__}: {exc}); "
                           "delete it to start afresh.") from exc
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise WeightsError(f"{path.name} is not a resume file of this plugin; delete it to start afresh.")
    return state


def resume_settings(path) -> ModelSettings:
    """The settings a resume file continues with."""
    return ModelSettings.from_dict(_load_resume(Path(path))["settings"])


NEW_OUTPUT_PRIOR = 0.05  # the probability a fresh edge or contact channel starts at


def with_outputs(model: UNet11, settings: ModelSettings, outputs: tuple[str, ...], feedback: Feedback) -> UNet11:
    """The initial model with the run's output channels: itself when they match; a one-channel
    model gains fresh edge and contact channels (its footprint channel and everything below
    kept), so a one-channel model can be fine-tuned into an instance-aware one; an
    instance-aware model asked for one channel keeps its footprint (body) channel alone."""
    if tuple(settings.outputs) == outputs or settings.out_channels == len(outputs) == 1:
        return model
    weight, bias = model.final.weight.detach(), model.final.bias.detach()
    if len(outputs) == 1:
        feedback.info(f"Only the initial model's footprint channel ({settings.outputs[0]}) is kept; "
                      f"{', '.join(settings.outputs[1:])} are dropped.")
        return _with_final_layer(model, weight[:1].clone(), bias[:1].clone())
    if settings.out_channels != 1:
        raise TrainingError(f"The initial model's outputs are {', '.join(settings.outputs)}, not "
                            f"{', '.join(outputs)}: train with its outputs or start from a one-channel model.")
    # The new channels start silent: zero weights (no gradient reaches the trained decoder
    # through them at first) and the bias of a rare class (p = NEW_OUTPUT_PRIOR). Random heads
    # began with a loss of 9 and cut the footprint channel's validation F1 from 0.56 to 0.2 in
    # the first epoch of a fine-tune; the RetinaNet prior initialisation avoids that shock.
    new = len(outputs) - 1
    prior = math.log(NEW_OUTPUT_PRIOR / (1 - NEW_OUTPUT_PRIOR))
    feedback.info(f"The initial model's footprint channel is kept; {', '.join(outputs[1:])} start afresh.")
    return _with_final_layer(model, torch.cat([weight[:1], torch.zeros((new,) + weight.shape[1:])]),
                             torch.cat([bias[:1], torch.full((new,), prior)]))


def _with_final_layer(model: UNet11, weight: torch.Tensor, bias: torch.Tensor) -> UNet11:
    """A copy of ``model`` whose final 1x1 layer has these rows (one per output channel)."""
    rebuilt = UNet11(in_channels=model.in_channels, width=model.width, out_channels=weight.shape[0])
    state = model.state_dict()
    state.update({"final.weight": weight, "final.bias": bias})
    rebuilt.load_state_dict(state, strict=True)
    return rebuilt


def _freeze_all_but_new_outputs(model: UNet11, settings: ModelSettings, feedback: Feedback):
    """Only the final layer learns; its footprint row is restored after every step (weight
    decay would move it even without a gradient). Returns that row (weight, bias)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("final."))
    feedback.info(f"Only the {', '.join(settings.outputs[1:])} channels of the final layer train; the footprint "
                  "channel and every layer below stay the initial model's.")
    return model.final.weight[:1].detach().clone(), model.final.bias[:1].detach().clone()


def _load_initial_model(initial_model: str) -> tuple[UNet11, ModelSettings]:
    """The checkpoint to fine-tune ("bundled": the plugin's own model)."""
    if initial_model == BUNDLED:
        from .bundled import bundled_model_path
        initial_model = bundled_model_path()
    return load_model(initial_model)


def _describe_data(data: TrainingData, options: TrainingOptions) -> str:
    if options.description:
        return options.description
    parts = [f"{Path(r.path).name} ({len(r.footprints)} footprints)" for r in data.regions]
    return "UNet11 trained on " + ", ".join(parts)


def _base_settings(data: TrainingData, options: TrainingOptions, initial: ModelSettings | None,
                   model: UNet11, feedback: Feedback) -> ModelSettings:
    """The new checkpoint's settings: the data's target (:func:`target_settings`), with per-band
    mean and std measured on the training crops as the model sees them (its scale and grid)."""
    settings = data.settings
    normalisation = options.normalisation
    if normalisation == "auto":
        normalisation = "model" if initial else "sn6"
    elif normalisation == "per-band":
        mean, std = data.band_statistics(np.random.default_rng([options.seed, 0xBA5D]))
        settings = replace(settings, mean=mean, std=std)
        feedback.info(f"Per-band normalisation on {settings.input_scale} values: mean "
                      + ", ".join(f"{m:.3f}" for m in mean) + "; std " + ", ".join(f"{s:.3f}" for s in std))
    return replace(settings, architecture="UNet11", width=model.width, threshold=options.threshold,
                   outputs=tuple(options.outputs),
                   min_area_m2=options.label_min_area_m2, grow_m=options.label_erosion_m or 0.0, flip_average=False,
                   rotate_180=False, description=_describe_data(data, options),
                   extra=dict(normalisation=normalisation))


def _checkpoint_settings(base: ModelSettings, record: EpochRecord, options: TrainingOptions,
                         data: TrainingData, total_steps: int) -> ModelSettings:
    extra = dict(base.extra)
    extra.update(epoch=record.epoch, steps=total_steps, training_loss=round(record.loss, 6),
                 validation_f1=None if record.val_f1 is None else round(record.val_f1, 6),
                 validation_precision=None if record.val_precision is None else round(record.val_precision, 6),
                 validation_recall=None if record.val_recall is None else round(record.val_recall, 6),
                 validation_iou=None if record.val_iou is None else round(record.val_iou, 6),
                 validation_share=options.validation_share,
                 training_rasters=[Path(r.path).name for r in data.regions],
                 training_footprints=sum(len(r.footprints) for r in data.regions),
                 tile_size_px=options.tile_size_px, batch_size=options.batch_size,
                 learning_rate=options.learning_rate, seed=options.seed,
                 initial_model=Path(str(options.initial_model)).name if options.initial_model else None,
                 loss=f"dice + {options.focal_weight:g} x focal (gamma {options.focal_gamma:g})"
                      + (f", focal x {1 + options.contact_weight:g} where touching buildings meet"
                         if options.contact_weight > 0 else ""),
                 contact_weight=options.contact_weight)
    if len(base.outputs) > 1:
        extra.update(edge_width_px=EDGE_WIDTH_PX)
    return replace(base, extra=extra)


def _label_erosion(options: TrainingOptions, resume_state: dict | None, initial: ModelSettings | None,
                   feedback: Feedback) -> float:
    """The masks' erosion: a resumed run's, else the option, else the initial model's (a model
    fine-tuned on other masks would unlearn its gaps), else the default."""
    if resume_state is not None:
        return float(ModelSettings.from_dict(resume_state["settings"]).grow_m)
    if options.label_erosion_m is not None:
        if initial is not None and options.label_erosion_m != initial.grow_m:
            feedback.warning(f"Label erosion {options.label_erosion_m:g} m differs from the initial model's "
                             f"({initial.grow_m:g} m): the model has to relearn its outlines.")
        return float(options.label_erosion_m)
    return float(initial.grow_m) if initial is not None else DEFAULT_LABEL_EROSION_M


def _warn_if_specks_would_pass(data: TrainingData, options: TrainingOptions, feedback: Feedback) -> None:
    """Extraction grows every blob by the erosion before the minimum area is applied: too large
    an erosion lets a speck of 2 x 2 pixels grow past the minimum area and count as a building."""
    erosion = options.label_erosion_m or 0.0
    pixel = max(r.grid.pixel_size_m for r in data.regions)
    grown = (2 * pixel + 2 * erosion) ** 2
    if erosion > 0 and grown >= options.label_min_area_m2:
        largest = max(0.0, (math.sqrt(options.label_min_area_m2) - 2 * pixel) / 2)
        feedback.warning(f"Label erosion {erosion:g} m is large for {pixel:g} m pixels: a 2 x 2 pixel speck grows to "
                         f"{grown:.1f} m² at extraction, past the minimum building area "
                         f"({options.label_min_area_m2:g} m²), so noise would count as buildings. Use at most "
                         f"{largest:.2f} m, or raise the minimum area.")


def _better(record: EpochRecord, best_key: tuple | None) -> tuple[bool, tuple]:
    """With validation: higher F1, ties (F1 0 early on) broken by area IoU, then lower loss;
    without: lower loss."""
    key = (record.val_f1, record.val_iou, -record.loss) if record.val_f1 is not None else (-record.loss,)
    return best_key is None or tuple(key) > tuple(best_key), key


# ---------------------------------------------------------------- the run

def train_model(rasters: Sequence, labels: Sequence[LabelSource], output_path,
                options: TrainingOptions = TrainingOptions(), feedback: Feedback | None = None) -> TrainingResult:
    """Train (or fine-tune) a UNet11 and keep the best epoch's checkpoint at ``output_path``.

    ``labels[i]`` holds the footprints of ``rasters[i]``: a vector file (any OGR format, any
    CRS) or a :class:`FootprintTable`. Raises :class:`Cancelled` when the feedback asks to
    stop (within one batch); checkpoints already written stay whole and ``resume`` continues.
    """
    feedback = feedback or Feedback()
    options.check()
    started = time.perf_counter()
    output_path = Path(output_path)
    if not output_path.parent.is_dir():
        raise FileNotFoundError(f"Output folder {output_path.parent} does not exist; create it or choose another path.")
    resume_path = Path(options.resume_file) if options.resume_file else resume_path_for(output_path)
    resume_state = None
    if options.resume:
        if resume_path.is_file():
            resume_state = _load_resume(resume_path)
        else:
            feedback.warning(f"No resume file {resume_path}: training from the start.")
    device = resolve_device(options.device)

    with ExitStack() as stack:
        initial_model, initial_settings, start = None, None, None
        if resume_state is not None:
            start = ModelSettings.from_dict(resume_state["settings"])
        elif options.initial_model:
            initial_model, initial_settings = _load_initial_model(options.initial_model)
            start = initial_settings
            if options.pixel_size_m and abs(options.pixel_size_m - initial_settings.pixel_size_m) > 1e-9:
                feedback.warning(f"Model pixel size {options.pixel_size_m:g} m differs from the initial model's "
                                 f"({initial_settings.pixel_size_m:g} m): the model has to relearn building sizes.")
        options = replace(options, label_erosion_m=_label_erosion(options, resume_state, initial_settings, feedback))
        if resume_state is not None:  # the resumed model's channels, whatever the options say
            options = replace(options, outputs=start.outputs)
        elif options.outputs is None:
            options = replace(options, outputs=options.outputs_from(start))
            if start and len(start.outputs) > 1:
                feedback.info(f"Outputs {', '.join(options.outputs)}: the initial model's.")
        data = TrainingData.open(rasters, labels, options, start, stack, feedback, resumed=resume_state is not None)
        _warn_if_specks_would_pass(data, options, feedback)

        if resume_state is not None:
            base = start
            model = UNet11(in_channels=base.bands, width=base.width, out_channels=base.out_channels)
            model.load_state_dict(resume_state["state_dict"], strict=True)
        else:
            if initial_model is None:
                torch.manual_seed(options.seed)
                model = UNet11(in_channels=data.bands, width=options.width, out_channels=len(options.outputs))
            else:
                model = with_outputs(initial_model, initial_settings, tuple(options.outputs), feedback)
                if initial_settings.width != options.width:
                    feedback.info(f"Width {initial_settings.width:g} comes from the initial model "
                                  f"(not {options.width:g}).")
            base = _base_settings(data, options, initial_settings, model, feedback)
        model.to(device, memory_format=torch.channels_last).train()  # faster convolutions, CPU and CUDA
        kept_outputs = _freeze_all_but_new_outputs(model, base, feedback) if options.train_only_new_outputs else None
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.learning_rate,
                                      weight_decay=options.weight_decay)
        history: list[EpochRecord] = []
        best_key, best_epoch, start_epoch, total_steps = None, None, 0, 0
        if resume_state is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
            for group in optimizer.param_groups:
                group["lr"] = options.learning_rate
            history = [EpochRecord(**r) for r in resume_state["history"]]
            best_key = tuple(resume_state["best_key"]) if resume_state["best_key"] is not None else None
            best_epoch, start_epoch = resume_state["best_epoch"], resume_state["epoch"]
            total_steps = resume_state["steps"]
            feedback.info(f"Resuming after epoch {start_epoch} (best epoch {best_epoch}).")

        steps = options.steps_per_epoch or max(
            1, round(data.training_pixels / (options.tile_size_px ** 2 * options.batch_size)))
        validation = ValidationSet(data.regions)
        tiling = TilingOptions(options.tile_size_px, min(64, options.tile_size_px // 4), options.batch_size)
        amp_dtype = autocast_dtype(device) if options.mixed_precision else None
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        feedback.info(f"Device: {describe(device, amp_dtype)}; UNet11 width {model.width:g}, "
                      f"{sum(p.numel() for p in model.parameters()):,} parameters; epochs {start_epoch + 1}–"
                      f"{options.epochs}, {steps} step(s) of {options.batch_size} x {options.tile_size_px} px tiles, "
                      f"AdamW lr {options.learning_rate:g} ({options.lr_schedule}); "
                      + ("validation F1 on the bottom "
                         f"{options.validation_share:.0%} of each raster" if validation else "no validation"))

        epochs_to_run = max(0, options.epochs - start_epoch)
        train_share = 90.0 if validation else 100.0
        for run_index, epoch in enumerate(range(start_epoch + 1, options.epochs + 1)):
            epoch_started = time.perf_counter()
            progress_from = 100.0 * run_index / epochs_to_run
            progress_span = 100.0 / epochs_to_run
            rng = np.random.default_rng([options.seed, epoch])  # per epoch: a resumed run draws the same tiles
            losses = []
            for step in range(steps):
                feedback.check_cancelled()
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate_at(options, (epoch - 1) * steps + step, options.epochs * steps)
                images, masks, weights = data.sample_batch(rng, options.batch_size, base)
                x = torch.from_numpy(images).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(masks).to(device, non_blocking=True)
                w = torch.from_numpy(weights).to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits = model(x)
                loss = outputs_loss(logits, y, w, options.focal_weight, options.focal_gamma)
                if not torch.isfinite(loss):
                    raise TrainingError(f"The loss became {loss.item()} in epoch {epoch}, step {step + 1}; "
                                             f"lower the learning rate (now {options.learning_rate:g}).")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                if kept_outputs is not None:  # the kept channels' rows of the final layer, exactly
                    with torch.no_grad():
                        model.final.weight[:1].copy_(kept_outputs[0])
                        model.final.bias[:1].copy_(kept_outputs[1])
                losses.append(loss.item())
                total_steps += 1
                feedback.set_progress(progress_from + progress_span * train_share / 100 * (step + 1) / steps)
            record = EpochRecord(epoch=epoch, loss=float(np.mean(losses)), steps=steps, seconds=0.0)
            if validation:
                scores = validation.evaluate(model, device, base, tiling, SubFeedback(
                    feedback, progress_from + progress_span * train_share / 100, progress_from + progress_span))
                for key, value in scores.items():
                    setattr(record, key, value)
            record.seconds = time.perf_counter() - epoch_started
            history.append(record)
            improved, key = _better(record, best_key)
            if improved:
                best_key, best_epoch = key, epoch
                save_model(output_path, model, _checkpoint_settings(base, record, options, data, total_steps))
            line = f"Epoch {epoch}/{options.epochs}: loss {record.loss:.4f}"
            if record.val_f1 is not None:
                line += (f", validation F1 {record.val_f1:.4f} (precision {record.val_precision:.4f}, recall "
                         f"{record.val_recall:.4f}; TP {record.val_tp}, FP {record.val_fp}, FN {record.val_fn}), "
                         f"area IoU {record.val_iou:.4f}")
            line += f"; {record.seconds:.1f} s" + (f" — best so far, saved to {output_path.name}" if improved else "")
            feedback.info(line)
            atomic_torch_save({"format": RESUME_FORMAT, "epoch": epoch, "steps": total_steps,
                                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                "optimizer": optimizer.state_dict(), "settings": base.to_dict(),
                                "best_key": list(best_key) if best_key is not None else None,
                                "best_epoch": best_epoch, "history": [asdict(r) for r in history]},
                               resume_path)
            feedback.set_progress(progress_from + progress_span)

    best = next((r for r in history if r.epoch == best_epoch), None)
    settings = load_model(output_path)[1] if best is not None and output_path.is_file() else None
    seconds = time.perf_counter() - started
    if best is not None:
        val_f1 = f", validation F1 {best.val_f1:.4f}" if best.val_f1 is not None else ""
        feedback.info(f"Best epoch {best.epoch}{val_f1}: {output_path} ({seconds:.0f} s)")
    return TrainingResult(output_path, best_epoch, best.val_f1 if best else None, len(history), history,
                          settings, seconds)
