"""The held-out evaluation sets: which simulated scenes a model is judged on, in one place.

Why one place: the model card's numbers, the CLI ``scripts/evaluate_models.py`` and the tests
must all mean the same scenes, and nobody may train or tune on them. Seeds are split in ranges
that never overlap:

* ``UNIT_TEST_SEEDS``  0-999         small scenes inside the unit tests;
* ``TRAINING_SEEDS``   10000-19999   scenes a model is trained or validated on, and on which the
  span baseline's parameters were tuned;
* ``HELDOUT_SEEDS``    20000-29999   the sets below, for evaluation only;
* ``DEMO_SEED``        424242        the demo scene.

A set is a dict of :func:`~.simulation.simulate_scene` parameters plus ``seeds``; a parameter
given as a tuple cycles over the set's scenes (scene i takes element i mod len), which is how
the harder sets hold both look directions. Everything not named takes the simulator's default
(mixed layout, 4 looks, 35 degrees, SN6 scale, 0.5 m pixels).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, Sequence

import rasterio

from .feedback import Feedback
from .scoring import precision_recall_f1

UNIT_TEST_SEEDS = range(0, 1000)
TRAINING_SEEDS = range(10000, 20000)
HELDOUT_SEEDS = range(20000, 30000)
DEMO_SEED = 424242
HELDOUT_SCENE_PX = 1024
SCENES_PER_SET = 2
MAX_SCENES_PER_SET = 8


def _frozen(**entries) -> Mapping:
    return MappingProxyType(entries)


def _seeds(first: int) -> tuple[int, ...]:
    return tuple(range(first, first + MAX_SCENES_PER_SET))


# The acceptance sets: default parameters in both look directions, three harder ones, the
# perpendicular looks (issue 12), and two more of issue 14.
HELDOUT_SETS: Mapping[str, Mapping] = MappingProxyType({
    "default-north": _frozen(look_direction="north", seeds=_seeds(20100)),
    "default-south": _frozen(look_direction="south", seeds=_seeds(20200)),
    "single-look": _frozen(looks=1, look_direction=("north", "south"), seeds=_seeds(20300)),
    "incidence-45": _frozen(incidence_deg=45.0, look_direction=("north", "south"), seeds=_seeds(20400)),
    "dense": _frozen(layout="dense", look_direction=("north", "south"), seeds=_seeds(20500)),
    # polar orbits look east or west: turned to the model's look, the world is turned by 90°
    "east-west": _frozen(look_direction=("east", "west"), seeds=_seeds(20600)),
    # issue 14: twice the buildings per block (fewer open plots, closer neighbours), and a swath
    # edge crossing the scene with nodata beyond it (no phantom buildings along the cut)
    "density-2": _frozen(building_density=2.0, look_direction=("north", "south"), seeds=_seeds(20700)),
    "nodata-edge": _frozen(nodata_strip=True, look_direction=("north", "south"), seeds=_seeds(20800)),
})


def scene_parameters(set_name: str, index: int, size_px: int = HELDOUT_SCENE_PX) -> dict:
    """The ``simulate_scene`` keyword arguments of scene ``index`` of a set."""
    if set_name not in HELDOUT_SETS:
        raise KeyError(f"unknown held-out set {set_name!r}; known: {', '.join(HELDOUT_SETS)}")
    definition = HELDOUT_SETS[set_name]
    seeds = definition["seeds"]
    if not 0 <= index < len(seeds):
        raise ValueError(f"set {set_name!r} has {len(seeds)} scenes, not {index + 1}")
    params = {"seed": seeds[index], "width_px": int(size_px), "height_px": int(size_px)}
    for key, value in definition.items():
        if key != "seeds":
            params[key] = value[index % len(value)] if isinstance(value, tuple) else value
    return params


def _cached_scene_matches(raster: Path, labels: Path, params: dict) -> bool:
    """Both files exist and the raster was simulated with these parameters (its SIMULATION tag)."""
    if not (raster.is_file() and labels.is_file()):
        return False
    try:
        with rasterio.open(raster) as dataset:
            stored = json.loads(dataset.tags().get("SIMULATION", "{}"))
    except (rasterio.errors.RasterioIOError, ValueError):
        return False
    return all(stored.get(key) == value for key, value in params.items())


def make_heldout_scenes(folder, sets: Iterable[str] | None = None, size_px: int = HELDOUT_SCENE_PX,
                        scenes_per_set: int = SCENES_PER_SET,
                        feedback: Feedback | None = None) -> list[tuple[str, Path, Path]]:
    """Simulate (or reuse) the held-out scenes; returns ``(set name, raster, labels)`` in set order.

    A scene already in ``folder`` with matching parameters is reused, so repeated evaluations
    cost nothing; after changing the simulator's code, delete the folder."""
    from .simulation import simulate_scene

    feedback = feedback or Feedback()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(HELDOUT_SETS) if sets is None else list(sets)
    if not 1 <= scenes_per_set <= MAX_SCENES_PER_SET:
        raise ValueError(f"scenes per set must be 1 to {MAX_SCENES_PER_SET}, not {scenes_per_set}")
    scenes = []
    for name in names:
        for index in range(scenes_per_set):
            params = scene_parameters(name, index, size_px)
            stem = f"{name}_{params['seed']}_{size_px}px"
            raster, labels = folder / f"{stem}.tif", folder / f"{stem}.gpkg"
            if not _cached_scene_matches(raster, labels, params):
                feedback.info(f"simulating held-out scene {stem}")
                for path in (raster, labels):
                    path.unlink(missing_ok=True)
                simulate_scene(raster, labels, **params)
            scenes.append((name, raster, labels))
    return scenes


def bootstrap_f1_sd(scenes: Sequence[dict], resamples: int = 2000, seed: int = 0) -> float | None:
    """Standard deviation of the pooled F1 over scenes drawn with replacement: how much a set's
    F1 would move with other scenes of the same kind (None for fewer than 2 scenes). Tells a
    real gain between two models from the noise of 8 scenes."""
    import numpy as np

    if len(scenes) < 2:
        return None
    counts = np.array([[s["tp"], s["fp"], s["fn"]] for s in scenes], float)
    draws = np.random.default_rng(seed).integers(0, len(scenes), size=(resamples, len(scenes)))
    tp, fp, fn = counts[draws].sum(axis=1).T
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    return float(f1.std())


def _pooled(tp: int, fp: int, fn: int) -> dict:
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def evaluate(extract: Callable, scenes: Sequence[tuple[str, Path, Path]],
             feedback: Feedback | None = None) -> dict[str, dict]:
    """Score ``extract(raster_path) -> ExtractionResult`` (a model or the span baseline) on
    ``scenes``, pooling TP/FP/FN over the scenes of each set (SpaceNet sn6 rule).

    Per set: counts, precision/recall/F1, ``seconds`` (wall time of the calls, model loading
    included), ``processing_seconds`` (the results' own inference + vectorising time, loading
    excluded) and ``megapixels_per_s`` from the latter; ``scenes`` lists each scene's counts;
    ``f1_bootstrap_sd`` and ``f1_scene_range`` say how much the pooled F1 rests on which scenes."""
    from .extract import score_extraction
    from .vector_io import read_footprints

    feedback = feedback or Feedback()
    report: dict[str, dict] = {}
    for name, raster, labels in scenes:
        feedback.check_cancelled()
        with rasterio.open(raster) as dataset:
            pixels = dataset.width * dataset.height
        started = time.perf_counter()
        result = extract(raster)
        wall = time.perf_counter() - started
        processing = result.seconds.get("processing", 0.0) or wall
        score = score_extraction(result, read_footprints(labels).geometries)
        entry = report.setdefault(name, {"tp": 0, "fp": 0, "fn": 0, "seconds": 0.0, "processing_seconds": 0.0,
                                         "megapixels": 0.0, "scenes": []})
        entry["tp"] += score.tp
        entry["fp"] += score.fp
        entry["fn"] += score.fn
        entry["seconds"] += wall
        entry["processing_seconds"] += processing
        entry["megapixels"] += pixels / 1e6
        entry["scenes"].append({"raster": Path(raster).name, **_pooled(score.tp, score.fp, score.fn),
                                "seconds": round(wall, 3)})
        feedback.info(f"{name} {Path(raster).name}: F1 {score.f1:.3f} (TP {score.tp}, FP {score.fp}, "
                      f"FN {score.fn}) in {wall:.1f} s")
    for entry in report.values():
        entry.update(_pooled(entry["tp"], entry["fp"], entry["fn"]))
        entry["megapixels_per_s"] = entry["megapixels"] / max(entry["processing_seconds"], 1e-9)
        entry["f1_bootstrap_sd"] = bootstrap_f1_sd(entry["scenes"])
        scene_f1 = [scene["f1"] for scene in entry["scenes"]]
        entry["f1_scene_range"] = [min(scene_f1), max(scene_f1)]
    return report
