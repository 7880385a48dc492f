"""The training algorithm in real QGIS: registry, processing.run, outputs, errors, cancellation."""
from __future__ import annotations

import processing
import pytest
import shapely
from affine import Affine
from qgis.core import (QgsApplication, QgsFeatureRequest, QgsProcessingException, QgsProcessingFeedback,
                       QgsVectorLayer)

from sn6_footprints.core.vector_io import reproject, write_footprints
from sn6_footprints.core.weights import load_model
from sn6_footprints.processing_provider.train_model import TrainModelAlgorithm
from tests.helpers.models import boxes_scene, write_raster

ALG = "sn6_footprints:train_model"
BOXES = [(r, c, r + 12, c + 12) for r in range(4, 124, 20) for c in range(4, 124, 20)]
FAST = {"WIDTH": 0.0625, "TILE_SIZE": 64, "BATCH_SIZE": 2, "EPOCHS": 2, "STEPS_PER_EPOCH": 2,
        "LEARNING_RATE": 0.001, "VALIDATION_SHARE": 0.25}


@pytest.fixture(scope="module")
def algorithm(plugin):
    """The provider as the plugin registers it, with this algorithm added if provider.py lacks it."""
    provider = QgsApplication.processingRegistry().providerById("sn6_footprints")
    if QgsApplication.processingRegistry().algorithmById(ALG) is None:
        provider.addAlgorithm(TrainModelAlgorithm())
    return QgsApplication.processingRegistry().algorithmById(ALG)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_scene")
    transform = Affine(0.5, 0, 594000, 0, -0.5, 5750000)
    raster = write_raster(folder / "scene.tif", boxes_scene(128, 128, BOXES), transform=transform)
    polygons = [shapely.box(*(transform * (c0, r1)), *(transform * (c1, r0)))
                for r0, c0, r1, c1 in BOXES]
    labels = write_footprints(folder / "scene.gpkg", reproject(polygons, "EPSG:32631", "EPSG:4326"),
                              crs="EPSG:4326")
    return raster, labels


def run_train(raster, labels, output, feedback=None, **extra):
    parameters = {"INPUT_RASTERS": [str(raster)], "LABELS": [str(labels)], "OUTPUT_MODEL": str(output), **FAST}
    parameters.update(extra)
    return processing.run(ALG, parameters, feedback=feedback)


def test_algorithm_declares_its_parameters_and_outputs(algorithm):
    assert algorithm.displayName() == "Train footprint model (TernausNet)"
    names = {p.name() for p in algorithm.parameterDefinitions()}
    assert {"INPUT_RASTERS", "LABELS", "WIDTH", "INITIAL_MODEL", "TILE_SIZE", "BATCH_SIZE", "EPOCHS",
            "LEARNING_RATE", "VALIDATION_SHARE", "DEVICE", "RESUME", "LABEL_EROSION", "OUTPUT_MODEL"} <= names
    assert {"BEST_F1", "BEST_EPOCH", "OUTPUT_MODEL"} <= {o.name() for o in algorithm.outputDefinitions()}
    help_text = algorithm.shortHelpString()
    assert "Default 256" in help_text and "Default 0.0001" in help_text


def test_training_writes_the_best_checkpoint_and_reports_its_f1(algorithm, scene, tmp_path):
    raster, labels = scene
    result = run_train(raster, labels, tmp_path / "model.pt")
    assert result["OUTPUT_MODEL"] == str(tmp_path / "model.pt")
    assert 0.0 <= result["BEST_F1"] <= 1.0 and result["BEST_EPOCH"] in (1, 2)
    model, settings = load_model(result["OUTPUT_MODEL"])
    assert settings.width == 0.0625 and settings.extra["epoch"] == result["BEST_EPOCH"]
    assert settings.extra["validation_f1"] == pytest.approx(result["BEST_F1"], abs=1e-6)
    assert settings.grow_m == 1.0  # the default label erosion, grown back at extraction


def test_label_erosion_is_an_optional_advanced_parameter_stored_in_the_model(algorithm, scene, tmp_path):
    parameter = algorithm.parameterDefinition("LABEL_EROSION")
    assert parameter.flags() & parameter.FlagOptional and parameter.flags() & parameter.FlagAdvanced
    raster, labels = scene
    result = run_train(raster, labels, tmp_path / "whole.pt", EPOCHS=1, VALIDATION_SHARE=0, LABEL_EROSION=0.0)
    assert load_model(result["OUTPUT_MODEL"])[1].grow_m == 0.0


def test_contact_weight_is_an_advanced_parameter_recorded_in_the_model(algorithm, scene, tmp_path):
    parameter = algorithm.parameterDefinition("CONTACT_WEIGHT")
    assert parameter.flags() & parameter.FlagAdvanced and parameter.defaultValue() == 0.0
    raster, labels = scene
    result = run_train(raster, labels, tmp_path / "contact.pt", EPOCHS=1, VALIDATION_SHARE=0, CONTACT_WEIGHT=5.0)
    extra = load_model(result["OUTPUT_MODEL"])[1].extra
    assert extra["contact_weight"] == 5.0 and "focal x 6 where touching buildings meet" in extra["loss"]
    with pytest.raises(QgsProcessingException):
        run_train(raster, labels, tmp_path / "bad.pt", CONTACT_WEIGHT=-1.0)


def test_an_instance_model_is_trained_through_the_worker_and_extraction_splits_with_it(algorithm, scene, tmp_path):
    parameter = algorithm.parameterDefinition("OUTPUTS")
    assert parameter.flags() & parameter.FlagAdvanced and parameter.defaultValue() == 2  # as the initial model
    raster, labels = scene
    result = run_train(raster, labels, tmp_path / "instances.pt", EPOCHS=1, VALIDATION_SHARE=0, OUTPUTS=1)
    model, settings = load_model(result["OUTPUT_MODEL"])
    assert settings.outputs == ("body", "edge", "contact") and model.out_channels == 3 and settings.splits_instances
    log = []
    feedback = QgsProcessingFeedback()
    feedback.pushInfo = log.append
    processing.run("sn6_footprints:extract_footprints", {"INPUT": str(raster), "MODEL": result["OUTPUT_MODEL"],
                                                         "OUTPUT": str(tmp_path / "out.gpkg")}, feedback=feedback)
    assert any("split by a marker-based watershed on the model's edge, contact output(s)" in line for line in log)


def test_footprint_layers_from_any_provider_are_read_through_qgis(algorithm, scene, tmp_path):
    raster, labels = scene
    memory = QgsVectorLayer(str(labels), "footprints", "ogr").materialize(QgsFeatureRequest())
    assert memory.providerType() == "memory" and memory.featureCount() == len(BOXES)
    result = run_train(raster, labels, tmp_path / "memory.pt", LABELS=[memory], EPOCHS=1, VALIDATION_SHARE=0)
    assert result["BEST_EPOCH"] == 1 and result["BEST_F1"] is None


def test_one_footprint_layer_per_raster_is_required(algorithm, scene, tmp_path):
    raster, labels = scene
    with pytest.raises(QgsProcessingException, match="one footprint layer per"):
        run_train(raster, labels, tmp_path / "model.pt", LABELS=[str(labels), str(labels)])
    assert not (tmp_path / "model.pt").exists()


class CancelAtFirstProgress(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.progressChanged.connect(lambda value: value > 0 and self.cancel())


def test_cancel_stops_and_writes_no_model(algorithm, scene, tmp_path):
    raster, labels = scene
    feedback = CancelAtFirstProgress()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run_train(raster, labels, tmp_path / "model.pt", feedback=feedback, EPOCHS=5)
    assert feedback.isCanceled() and feedback.progress() < 20
    assert list(tmp_path.iterdir()) == []


def test_the_rasters_are_read_with_the_extractions_input_parameters(algorithm, tmp_path):
    """Input scale dB and Band order 4,3,2,1 on a simulated dB scene: the new model reads the
    bands reversed (named by their descriptions) and, normalised per band, records the dB scale."""
    from sn6_footprints.core.simulation import simulate_scene

    for name in ("INPUT_SCALE", "BAND_ORDER", "ZEROS_NODATA", "RESAMPLING", "PIXEL_SIZE"):
        parameter = algorithm.parameterDefinition(name)
        assert parameter.flags() & parameter.FlagOptional, name  # models saved before them still validate
    assert all(algorithm.parameterDefinition(name).flags() & algorithm.parameterDefinition(name).FlagAdvanced
               for name in ("ZEROS_NODATA", "RESAMPLING", "PIXEL_SIZE"))
    help_text = algorithm.shortHelpString()
    assert "<b>Input scale</b>" in help_text and "<b>model pixel size</b>" in help_text and "Default: Auto" in help_text
    raster, labels = tmp_path / "db.tif", tmp_path / "db.gpkg"
    simulate_scene(raster, labels, width_px=160, height_px=160, seed=3, scale="db")
    result = run_train(raster, labels, tmp_path / "db.pt", EPOCHS=1, VALIDATION_SHARE=0, INPUT_SCALE=2,
                       BAND_ORDER="4,3,2,1", NORMALISATION=2)
    settings = load_model(result["OUTPUT_MODEL"])[1]
    assert settings.band_names == ("VV", "VH", "HV", "HH") and settings.input_scale == "db"
    assert all(m < 0 for m in settings.mean)
    with pytest.raises(QgsProcessingException, match="names band 9, but db.tif has bands 1 to 4"):
        run_train(raster, labels, tmp_path / "bad.pt", EPOCHS=1, VALIDATION_SHARE=0, BAND_ORDER="1,2,3,9")
    assert not (tmp_path / "bad.pt").exists()
