"""Touching buildings split end to end: a model with body and contact outputs, the streaming
engine carrying every channel, the watershed strip by strip and instances joined across strip
borders. The model is built by hand so its outputs are known pixel by pixel."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sn6_footprints.core.engine.tiling import TilingOptions
from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
from sn6_footprints.core.model import UNet11
from sn6_footprints.core.settings import ModelSettings
from sn6_footprints.core.weights import save_model
from tests.helpers.feedback import InfoLog
from tests.helpers.models import BRIGHT, DARK, write_raster

# Two houses sharing a wall (columns 60-99 and 100-139), a detached one, all tall enough that
# 64 px tiles cut each of them by several strip borders.
TERRACE = [(20, 60, 150, 100), (20, 100, 150, 140)]
DETACHED = (40, 170, 120, 200)
WALL_COLUMNS = (98, 102)


def body_contact_model(width: float = 0.125) -> UNet11:
    """Body logit = relu(normalised band 1) - 1; edge = -8 everywhere; contact logit =
    relu(normalised band 2) - 1: band 1 bright on every building, band 2 bright on the wall."""
    model = UNet11(in_channels=4, width=width, out_channels=3)
    nf = model.dec1.conv.out_channels
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for channel, band in ((0, 0), (1, 1)):  # conv1 / dec1 channel = relu(band), on the skip path
            model.conv1.weight[channel, band, 1, 1] = 1.0
            model.dec1.conv.weight[channel, nf + channel, 1, 1] = 1.0
        model.final.weight[0, 0, 0, 0] = 1.0
        model.final.bias[0] = -1.0
        model.final.bias[1] = -8.0
        model.final.weight[2, 1, 0, 0] = 1.0
        model.final.bias[2] = -1.0
    return model.eval()


def scene() -> np.ndarray:
    data = np.full((4, 180, 220), DARK, np.float32)
    for r0, c0, r1, c1 in TERRACE + [DETACHED]:
        data[0, r0:r1, c0:c1] = BRIGHT
    data[1, TERRACE[0][0]:TERRACE[0][2], WALL_COLUMNS[0]:WALL_COLUMNS[1]] = BRIGHT
    return data


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("instances")
    settings = ModelSettings(width=0.125, outputs=("body", "edge", "contact"), min_area_m2=1.0, seed_threshold=0.5,
                             min_seed_area_m2=2.0, description="test body/contact model")
    model = save_model(folder / "instances.pt", body_contact_model(), settings)
    one = save_model(folder / "one.pt", _one_output(), ModelSettings(width=0.125, min_area_m2=1.0,
                                                                     description="the same body, one output"))
    return write_raster(folder / "scene.tif", scene()), model, one


def _one_output() -> UNet11:
    three = body_contact_model()
    one = UNet11(in_channels=4, width=0.125)
    state = three.state_dict()
    state["final.weight"], state["final.bias"] = state["final.weight"][:1], state["final.bias"][:1]
    one.load_state_dict(state)
    return one.eval()


def run(raster, model, tiling=(64, 16, 3), feedback=None):
    return extract_footprints(raster, ExtractionOptions(model_path=str(model), tiling=TilingOptions(*tiling),
                                                        simplify_m=0, flip_average=False), feedback)


@pytest.mark.parametrize("tiling", [(64, 16, 3), (256, 0, 1)], ids=["strips-cut-every-building", "one-tile"])
def test_a_terrace_is_two_buildings_and_each_building_one(paths, tiling):
    raster, model, _ = paths
    log = InfoLog()
    result = run(raster, model, tiling, log)
    assert len(result) == 3, [g.bounds for g in result.geometries]
    assert any("split by a marker-based watershed" in line for line in log.lines)
    terrace = [g for g in result.geometries if g.bounds[0] < 594000 + 150 * 0.5]
    left, right = sorted(terrace, key=lambda g: g.bounds[0])
    # each house keeps its own side of the wall: the line between them lies within the wall
    assert 594000 + WALL_COLUMNS[0] * 0.5 <= left.bounds[2] <= 594000 + WALL_COLUMNS[1] * 0.5
    assert left.intersection(right).area == 0
    assert sum(g.area for g in result.geometries) == pytest.approx(sum(
        (r1 - r0) * (c1 - c0) * 0.25 for r0, c0, r1, c1 in TERRACE + [DETACHED]))


def test_the_same_body_without_a_contact_output_merges_the_terrace(paths):
    raster, _, one = paths
    assert len(run(raster, one)) == 2


def test_rows_observed_in_one_run_give_what_extracting_with_other_settings_gives(paths, tmp_path):
    """The instance calibration's shortcut (scripts/train_default_model.py): the blended rows of
    one run, split and vectorised under another seed threshold, give exactly the footprints
    that extracting with a checkpoint holding that seed threshold gives."""
    from dataclasses import replace

    import rasterio

    from sn6_footprints.core.reading import InputOptions, plan_input
    from sn6_footprints.core.vectorize import InstanceCollector, VectorizeOptions
    from sn6_footprints.core.weights import load_model

    raster, model, _ = paths
    rows = []
    options = ExtractionOptions(model_path=str(model), tiling=TilingOptions(64, 16, 3), simplify_m=0,
                                flip_average=False)
    assert len(extract_footprints(raster, options, observe_rows=rows.append)) == 3
    assert len(rows) > 2 and all(r.channels is not None and r.channels.shape[0] == 3 for r in rows)
    net, settings = load_model(model)
    unseeded = replace(settings, seed_threshold=0.999999)   # no seed: the terrace stays one blob
    expected = extract_footprints(raster, replace(options, model_path=str(save_model(tmp_path / "u.pt", net,
                                                                                      unseeded))))
    with rasterio.open(raster) as dataset:
        grid = plan_input(dataset, settings, InputOptions(), "scene.tif").grid
    vectorize = VectorizeOptions.for_model(unseeded, grid, 0)
    collector = InstanceCollector.for_settings(grid, vectorize, unseeded)
    for block in rows:
        collector.add(block)
    geometries, attributes = collector.polygons(grid, vectorize)
    assert len(geometries) == len(expected) == 2
    assert [g.wkt for g in geometries] == [g.wkt for g in expected.geometries]
    assert attributes == expected.attributes


def test_training_validation_splits_touching_buildings_as_extraction_does(paths, tmp_path):
    """The validation F1 that picks a training run's best epoch sees an instance-aware model's
    terrace as two buildings, as extraction does (it once thresholded the body channel alone)."""
    from contextlib import ExitStack

    from sn6_footprints.core.feedback import Feedback
    from sn6_footprints.core.training import TrainingData, TrainingOptions, ValidationSet
    from sn6_footprints.core.weights import load_model
    from tests.core.test_training import write_labels

    _, instance_path, one_path = paths
    below = 40   # training rows above the houses, which all lie in the validation band
    taller = np.concatenate([np.full((4, below, scene().shape[2]), DARK, np.float32), scene()], axis=1)
    raster = write_raster(tmp_path / "taller.tif", taller)
    labels = write_labels(tmp_path / "houses.gpkg", [(r0 + below, c0, r1 + below, c1)
                                                     for r0, c0, r1, c1 in TERRACE + [DETACHED]])
    counts = {}
    for name, path in (("instances", instance_path), ("one output", one_path)):
        model, settings = load_model(path)
        options = TrainingOptions(width=0.125, validation_share=0.8, outputs=settings.outputs)
        with ExitStack() as stack:
            data = TrainingData.open([raster], [labels], options, settings, stack, None)
            assert 32 <= data.regions[0].split_row < TERRACE[0][0] + below   # every house in the band
            scores = ValidationSet(data.regions).evaluate(model, torch.device("cpu"), settings,
                                                          TilingOptions(64, 16, 3), Feedback())
        counts[name] = (scores["val_tp"], scores["val_fp"], scores["val_fn"])
    assert counts == {"instances": (3, 0, 0), "one output": (1, 1, 2)}
