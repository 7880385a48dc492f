"""The choices and defaults a user meets in the dialogs, the CLI and the core alike.

One place, standard library only: QGIS's process reads them here without importing the core
(which runs in the worker), and the core re-exports them where they belong.
"""

DEVICE_CHOICES = ("auto", "cuda", "cpu")
PRECISION_CHOICES = ("auto", "float32", "bfloat16", "float16")  # the forward pass's arithmetic
PROBABILITY_FORMATS = ("float32", "uint8")  # the optional probability raster's data types
SCORING_VARIANTS = ("sn6", "solaris")  # the official SpaceNet 6 scorer; solaris's evaluator
SN6_MIN_AREA_M2 = 20.0  # 80 px at 0.5 m
# New models' training masks shrink every footprint by this much (grow_m in the model's
# settings): touching buildings then lie 2 x this apart, a gap a small model learns to leave.
DEFAULT_LABEL_EROSION_M = 1.0
# The extraction's presets: this plugin's engine, or the SpaceNet 6 baseline's inference step
# by step (REFERENCE.md §3), so the official weights give the published baseline's polygons.
DEFAULT_PRESET = "default"
SN6_EXACT_PRESET = "sn6-exact"
PRESETS = (DEFAULT_PRESET, SN6_EXACT_PRESET)
# Footprint outlines: as traced from the probabilities (then simplified), or regular: straight
# walls along each building's two main directions, right-angled corners (map-ready).
TRACED_OUTLINE = "traced"
REGULAR_OUTLINE = "regular"
OUTLINE_STYLES = (TRACED_OUTLINE, REGULAR_OUTLINE)
# What a trained model predicts: the footprint only (the SN6 baseline's one channel), or the
# footprint's body, edge and the contact between touching buildings (extraction then splits
# touching buildings by a watershed). Names as the training CLI takes them -> output channels.
MODEL_OUTPUTS = {"footprint": ("building",), "instances": ("body", "edge", "contact")}
# Extraction tiles: 0 is Auto, the tile in this range that computes the fewest pixels on the
# scene (core.engine.tiling.TilingOptions.fitted). Per pixel the bundled model's forward ran
# as fast on 1024 px tiles as on 512 px ones (2-core CPUs, within the noise); the SN6 baseline
# trains on 512 px crops.
AUTO_TILE_PX = 0
AUTO_TILE_RANGE_PX = (512, 1024)


def parse_scales(text: str) -> tuple[float, ...]:
    """Test-time scales as typed in the CLI or the dialog ("0.8, 1, 1.25"); ValueError with the
    sentence to show when it is not a list of numbers (the range is checked with the rest)."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"Test-time scales {text!r} are not a comma-separated list of numbers; "
                         "use for example 0.8,1,1.25 (empty: none).") from None
