"""Bad-input matrix, ground truth and labels (issue 11, item 7): polygons only, repaired the
same way on every path, SpaceNet pixel CSVs placed with the raster's geotransform.

Every case runs the real CLI in a subprocess and/or ``processing.run`` with the worker, and
asserts the exact outcome: the message, the exit code or exception, the scores where it
scores, no output left and the inputs untouched. A refused extraction is refused before the
model loads (its 'Model:' log line never appears)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
import shapely.affinity
from affine import Affine
from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsVectorLayer

from sn6_footprints.core.vector_io import reproject, write_footprints
from tests.helpers.models import TRANSFORM, boxes_scene, write_raster
from tests.helpers.plugins import install_plugin, qgis_process
from tests.matrix.conftest import (BOXES, FAST, FAST_PARAMS, SCENE_SIZE, assert_untouched, box_polygons,
                                   scratch_folders, take_snapshot)

FIX = "not polygons: choose the building footprint polygons"
ROTATED = Affine.translation(594000, 5750000) * Affine.rotation(25) * Affine.scale(0.5, -0.5)
BOWTIE_PX = (105, 10, 121, 26)  # (row0, col0, row1, col1) of a figure-eight in the dark part of the scene


class LogFeedback(QgsProcessingFeedback):
    """Keeps the log lines (info and warnings) of a processing.run."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def pushInfo(self, info):  # noqa: N802 - QGIS API
        self.lines.append(info)
        super().pushInfo(info)

    def reportError(self, error, fatalError=False):  # noqa: N802,N803 - QGIS API
        self.lines.append(error)
        super().reportError(error, fatalError)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


# ---------------------------------------------------------------- inputs of the wrong kind

def write_layer(path: Path, geometries: list, geometry_type: str, crs: str | None = "EPSG:32631") -> Path:
    """Any geometries, valid or not, as they are (pyogrio writes the WKB untouched)."""
    driver = {".gpkg": "GPKG", ".geojson": "GeoJSON"}[path.suffix]
    wkb = np.array([shapely.to_wkb(g) for g in geometries], dtype=object)
    pyogrio.raw.write(str(path), wkb, [], [], layer=path.stem, driver=driver, geometry_type=geometry_type, crs=crs,
                      promote_to_multi=False)
    return path


def map_polygons(pixel_polygons, transform=TRANSFORM) -> list:
    return [shapely.transform(p, lambda xy: np.column_stack(transform * (xy[:, 0], xy[:, 1]))) for p in pixel_polygons]


def pixel_boxes(boxes=BOXES) -> list:
    return [shapely.box(c0, r0, c1, r1) for r0, c0, r1, c1 in boxes]


def notched(box: shapely.Polygon) -> shapely.Polygon:
    """The box with a tiny self-crossing loop at one corner: invalid, repaired to the box."""
    x0, y0, x1, y1 = box.bounds
    return shapely.Polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0 + 0.25), (x0 + 0.25, y0 - 0.25)])


def bowtie(r0, c0, r1, c1) -> shapely.Polygon:
    """A figure-eight (two triangles meeting in the middle): its ring crosses itself."""
    return shapely.Polygon([(c0, r0), (c1, r0), (c0, r1), (c1, r1)])


def spacenet_csv(path: Path, rows: list[tuple[str, int, shapely.Geometry]]) -> Path:
    lines = ["ImageId,BuildingId,PolygonWKT_Pix"] + [f'{image},{bid},"{g.wkt}"' for image, bid, g in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def truth_points(tmp: Path) -> Path:
    return write_layer(tmp / "truth_points.gpkg", [p.centroid for p in box_polygons()], "Point")


def truth_lines(tmp: Path) -> Path:
    return write_layer(tmp / "truth_lines.gpkg", [p.exterior for p in box_polygons()], "LineString")


def truth_table(tmp: Path) -> Path:
    path = tmp / "table.csv"
    path.write_text("name,height\nhall,12\nbarn,6\n", encoding="utf-8")
    return path


def truth_mixed(tmp: Path) -> Path:
    polygons = box_polygons()
    return write_layer(tmp / "mixed.geojson", [polygons[0], polygons[1].centroid], "Unknown", crs="EPSG:32631")


def truth_outside_csv(tmp: Path) -> Path:
    return spacenet_csv(tmp / "outside.csv", [("img", i, shapely.box(1000 + 50 * i, 900, 1030 + 50 * i, 930))
                                              for i in range(2)])


def truth_multi_image_csv(tmp: Path) -> Path:
    return spacenet_csv(tmp / "two_images.csv", [("img7", 1, pixel_boxes()[0]), ("img8", 2, pixel_boxes()[1])])


REFUSED = {  # case -> (writer, the message CLI and Processing both give)
    "points": (truth_points, f"truth_points.gpkg holds points, {FIX}"),
    "lines": (truth_lines, f"truth_lines.gpkg holds lines, {FIX}"),
    "csv_without_geometry": (truth_table, f"table.csv has no geometry (a table with columns name, height), {FIX}"),
    "csv_outside_the_raster": (truth_outside_csv, "outside.csv: none of its 2 pixel polygon(s) lie on scene.tif "
                                                  "(0–128 x 0–128 px; theirs span x 1000–1080, y 900–930)"),
    "csv_of_other_images": (truth_multi_image_csv, "two_images.csv holds 2 images (img7, img8) and none matches the "
                                                   "raster's name scene.tif"),
}
CLI_ONLY_REFUSED = {
    "mixed_points_and_polygons": (truth_mixed, "mixed.geojson holds points as well as polygons: choose the building "
                                               "footprint polygons only"),
}


# ---------------------------------------------------------------- truth that scores

def truth_spacenet_csv(tmp: Path) -> Path:
    return spacenet_csv(tmp / "truth.csv", [("img", i + 1, g) for i, g in enumerate(pixel_boxes())])


def truth_bowties(tmp: Path) -> Path:
    """Both boxes drawn with a self-crossing notch, plus a figure-eight where nothing is built."""
    return write_layer(tmp / "bowties.gpkg", map_polygons([notched(b) for b in pixel_boxes()] + [bowtie(*BOWTIE_PX)]),
                       "Polygon")


def truth_empty(tmp: Path) -> Path:
    return write_layer(tmp / "empty.gpkg", [], "Polygon")


def truth_wgs84(tmp: Path) -> Path:
    return write_footprints(tmp / "truth_4326.geojson", reproject(box_polygons(), "EPSG:32631", "EPSG:4326"),
                            {"id": [1, 2]}, "EPSG:4326")


SCORED = {  # case -> (writer, raster transform, (TP, FP, FN), F1, log lines it must show)
    "spacenet_pixel_csv": (truth_spacenet_csv, TRANSFORM, (2, 0, 0), 1.0, [
        "truth.csv is a SpaceNet CSV in pixel coordinates: 2 polygon(s) placed on scene.tif with its geotransform",
        "Against 2 ground-truth footprint(s)"]),
    "spacenet_pixel_csv_rotated_raster": (truth_spacenet_csv, ROTATED, (2, 0, 0), 1.0, [
        "truth.csv is a SpaceNet CSV in pixel coordinates: 2 polygon(s) placed on scene.tif with its geotransform"]),
    "invalid_bowties_repaired": (truth_bowties, TRANSFORM, (2, 0, 1), 0.8, [
        "bowties.gpkg: repaired 3 invalid ground-truth polygon(s) with make_valid",
        "Against 3 ground-truth footprint(s)"]),
    "empty_layer_warns": (truth_empty, TRANSFORM, (0, 2, 0), 0.0, [
        "the ground truth has no polygons: every proposal is a false positive",
        "Against 0 ground-truth footprint(s)"]),
    "truth_in_another_crs": (truth_wgs84, TRANSFORM, (2, 0, 0), 1.0, ["Against 2 ground-truth footprint(s)"]),
}


def make_scene(folder: Path, transform=TRANSFORM, name: str = "scene.tif") -> Path:
    return write_raster(folder / name, boxes_scene(SCENE_SIZE, SCENE_SIZE, BOXES), transform=transform)


# ---------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def cli_extract_runs(tmp_path_factory, model):
    """The CLI extraction cases below, each in a folder of its own, through the CLI's ``main`` in
    one child process (tests/matrix/conftest.py, run_cli_batch): ``{case: (folder, scene, truth,
    snapshot, (code, stdout, stderr))}``; the snapshot is taken before the child starts."""
    from tests.matrix.conftest import run_cli_batch

    prepared = {}
    for case, (writer, _message) in {**REFUSED, **CLI_ONLY_REFUSED}.items():
        folder = tmp_path_factory.mktemp(f"refused-{case}")
        scene, truth = make_scene(folder), writer(folder)
        argv = ["extract", scene, folder / "out.gpkg", "--model", model, "--truth", truth, *FAST]
        prepared[f"refused-{case}"] = (folder, scene, truth, take_snapshot([scene, truth, model, folder]), argv)
    for case, (writer, transform, *_rest) in SCORED.items():
        folder = tmp_path_factory.mktemp(f"scored-{case}")
        scene, truth = make_scene(folder, transform), writer(folder)
        argv = ["extract", scene, folder / "out.gpkg", "--model", model, "--truth", truth, "--json", *FAST]
        prepared[f"scored-{case}"] = (folder, scene, truth, take_snapshot([scene, truth, model]), argv)
    results = run_cli_batch({key: entry[-1] for key, entry in prepared.items()}, tmp_path_factory.mktemp("batch"))
    return {key: (*entry[:-1], results[key]) for key, entry in prepared.items()}


@pytest.mark.parametrize("case", [*REFUSED, *CLI_ONLY_REFUSED])
def test_cli_extract_refuses_truth_of_the_wrong_kind_before_the_model(case, cli_extract_runs):
    _writer, message = {**REFUSED, **CLI_ONLY_REFUSED}[case]
    folder, _scene, _truth, before, (code, _, stderr) = cli_extract_runs[f"refused-{case}"]
    assert code == 2, stderr
    assert message in stderr and stderr.count("\n") == 1, stderr  # one line, no traceback
    assert "Model:" not in stderr  # refused before the model loaded
    assert not (folder / "out.gpkg").exists()
    assert_untouched(before)


@pytest.mark.parametrize("case", SCORED)
def test_cli_extract_scores_right(case, cli_extract_runs):
    _writer, _transform, (tp, fp, fn), f1, log = SCORED[case]
    _folder, _scene, _truth, before, (code, stdout, stderr) = cli_extract_runs[f"scored-{case}"]
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["buildings"], summary["tp"], summary["fp"], summary["fn"]) == (2, tp, fp, fn)
    assert summary["f1"] == pytest.approx(f1)
    for line in log:
        assert line in stderr, stderr
    assert_untouched(before)


def test_cli_extract_takes_the_rows_of_the_raster_s_image_from_a_multi_image_csv(cli, model, tmp_path):
    """SpaceNet names rasters <product>_<ImageId>.tif: only that image's rows are its truth."""
    scene = make_scene(tmp_path, name="SN6_Train_AOI_11_Rotterdam_SAR-Intensity_img7.tif")
    rows = [("img7", i + 1, g) for i, g in enumerate(pixel_boxes())] + [("img8", 3, shapely.box(5, 5, 20, 20)),
                                                                       ("img8", 4, shapely.box(30, 30, 50, 50))]
    truth = spacenet_csv(tmp_path / "SN6_buildings.csv", rows)
    code, stdout, stderr = cli("extract", scene, tmp_path / "out.gpkg", "--model", model, "--truth", truth,
                               "--json", *FAST)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["tp"], summary["fp"], summary["fn"], summary["f1"]) == (2, 0, 0, 1.0)
    assert "2 polygon(s) (ImageId img7, 2 of 4 rows) placed on SN6_Train_AOI_11_Rotterdam_SAR-Intensity_img7.tif" \
        in stderr


def test_cli_score_refuses_point_proposals_and_writes_nothing(cli, truth, tmp_path, snapshot):
    proposals = write_layer(tmp_path / "proposals_points.gpkg", [p.centroid for p in box_polygons()], "Point")
    scored, missed = tmp_path / "scored.gpkg", tmp_path / "missed.gpkg"
    before = snapshot([truth, proposals, tmp_path])
    code, _, stderr = cli("score", truth, proposals, "--scored-proposals", scored, "--missed", missed)
    assert code == 2
    assert f"proposals_points.gpkg holds points, {FIX}" in stderr and stderr.count("\n") == 1, stderr
    assert not scored.exists() and not missed.exists()
    assert_untouched(before)


def test_cli_score_repairs_invalid_truth_and_proposals_alike(cli, truth, tmp_path):
    bowties = truth_bowties(tmp_path)
    code, stdout, stderr = cli("score", bowties, bowties, "--json", "--min-area", "1")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert (report["tp"], report["fp"], report["fn"], report["f1"]) == (3, 0, 0, 1.0)
    assert "bowties.gpkg: repaired 3 invalid ground-truth polygon(s) with make_valid" in stderr
    assert "bowties.gpkg: repaired 3 invalid proposal polygon(s) with make_valid" in stderr
    code, stdout, stderr = cli("score", bowties, truth, "--json", "--min-area", "1")
    report = json.loads(stdout)
    assert code == 0 and (report["tp"], report["fp"], report["fn"]) == (2, 0, 1)


def test_cli_score_warns_on_empty_truth_and_still_scores(cli, truth, tmp_path):
    code, stdout, stderr = cli("score", truth_empty(tmp_path), truth, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert (report["tp"], report["fp"], report["fn"], report["f1"]) == (0, 2, 0, 0.0)
    assert "warning: the ground truth has no polygons: every proposal is a false positive" in stderr


TRAIN_FAST = ["--epochs", "1", "--steps-per-epoch", "1", "--tile-size", "64", "--batch-size", "1", "--width",
              "0.125", "--val-share", "0", "--device", "cpu"]


def labels_outside(tmp: Path) -> Path:
    far = [shapely.affinity.translate(p, 10_000, 0) for p in box_polygons()]
    return write_footprints(tmp / "elsewhere.gpkg", far, {"id": [1, 2]}, "EPSG:32631")


TRAIN_REFUSED = {
    "point_labels": (truth_points, f"truth_points.gpkg holds points, {FIX}"),
    "empty_labels": (truth_empty, "No label polygons lie on the training raster(s) (empty.gpkg: 0 polygon(s), 0 on "
                                  "scene.tif): choose the building footprint polygons"),
    "labels_off_the_raster": (labels_outside, "No label polygons lie on the training raster(s) (elsewhere.gpkg: 2 "
                                              "polygon(s), 0 on scene.tif)"),
}


@pytest.mark.parametrize("case", TRAIN_REFUSED)
def test_cli_train_refuses_labels_of_the_wrong_kind_before_training(case, cli, scene, tmp_path, snapshot):
    writer, message = TRAIN_REFUSED[case]
    labels = writer(tmp_path)
    output = tmp_path / "model.pt"
    before = snapshot([scene, labels, tmp_path])
    code, _, stderr = cli("train", "--raster", scene, "--labels", labels, "--output", output, *TRAIN_FAST)
    assert code == 2, stderr
    assert message in stderr.splitlines()[-1] and "Traceback" not in stderr, stderr
    assert "epoch" not in stderr.lower()
    assert not output.exists() and not Path(str(output) + ".resume.pt").exists()
    assert_untouched(before)


def test_cli_train_repairs_invalid_labels_and_counts_them(cli, scene, tmp_path):
    code, stdout, stderr = cli("train", "--raster", scene, "--labels", truth_bowties(tmp_path), "--output",
                               tmp_path / "model.pt", "--json", *TRAIN_FAST)
    assert code == 0, stderr
    assert "bowties.gpkg: repaired 3 invalid label polygon(s) with make_valid" in stderr
    assert "3 footprint(s)" in stderr and json.loads(stdout)["epochs"] == 1


# ---------------------------------------------------------------- processing.run (through the worker)

def extract_params(scene, model, truth, output) -> dict:
    return {"INPUT": str(scene), "MODEL": str(model), "GROUND_TRUTH": str(truth), "OUTPUT": str(output),
            **FAST_PARAMS}


PROCESSING_REFUSED = {
    **REFUSED,
    # QGIS knows no single geometry type for it: exported as it is, the worker refuses it (named after the file)
    "mixed_points_and_polygons": (truth_mixed, "mixed.gpkg holds points as well as polygons: choose the building "
                                               "footprint polygons only"),
}


@pytest.mark.parametrize("case", PROCESSING_REFUSED)
def test_processing_extract_refuses_truth_of_the_wrong_kind(case, run_alg, scene, model, tmp_path, snapshot):
    writer, message = PROCESSING_REFUSED[case]
    truth = writer(tmp_path)
    output = tmp_path / "out.gpkg"
    before = snapshot([scene, truth, model, tmp_path])
    log = LogFeedback()
    with pytest.raises(QgsProcessingException) as raised:
        run_alg("extract_footprints", extract_params(scene, model, truth, output), feedback=log)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert "Model:" not in log.text  # refused before the model loaded (in QGIS or in the worker)
    assert not output.exists() and scratch_folders() == []
    assert_untouched(before)


@pytest.mark.parametrize("case", SCORED)
def test_processing_extract_scores_right(case, run_alg, model, tmp_path, snapshot):
    writer, transform, (tp, fp, fn), f1, log_lines = SCORED[case]
    scene, truth = make_scene(tmp_path, transform), writer(tmp_path)
    output = tmp_path / "out.gpkg"
    before = snapshot([scene, truth, model])
    log = LogFeedback()
    result = run_alg("extract_footprints", extract_params(scene, model, truth, output), feedback=log)
    assert (result["BUILDING_COUNT"], result["TP"], result["FP"], result["FN"]) == (2, tp, fp, fn)
    assert result["F1"] == pytest.approx(f1)
    for line in log_lines:
        assert line in log.text, log.text
    layer = QgsVectorLayer(str(output), "out", "ogr")
    assert layer.isValid() and layer.featureCount() == 2
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(("-journal", "-wal", "-shm"))
                or p.name.startswith(".sn6-")]  # no partial GeoPackage, journal or temporary folder
    assert scratch_folders() == []
    assert_untouched(before)


def test_processing_score_refuses_point_proposals_before_export(run_alg, truth, tmp_path, snapshot):
    proposals = write_layer(tmp_path / "proposals_points.gpkg", [p.centroid for p in box_polygons()], "Point")
    before = snapshot([truth, proposals, tmp_path])
    with pytest.raises(QgsProcessingException, match=f"proposals_points.gpkg holds points, {FIX}"):
        run_alg("score_footprints", {"TRUTH": str(truth), "PROPOSALS": str(proposals),
                                     "OUTPUT_PROPOSALS": str(tmp_path / "scored.gpkg"),
                                     "OUTPUT_MISSED": str(tmp_path / "missed.gpkg")})
    assert scratch_folders() == []
    assert_untouched(before)


def test_processing_score_refuses_line_truth(run_alg, truth, tmp_path):
    with pytest.raises(QgsProcessingException, match=f"truth_lines.gpkg holds lines, {FIX}"):
        run_alg("score_footprints", {"TRUTH": str(truth_lines(tmp_path)), "PROPOSALS": str(truth),
                                     "OUTPUT_PROPOSALS": "TEMPORARY_OUTPUT", "OUTPUT_MISSED": "TEMPORARY_OUTPUT"})


def test_processing_score_refuses_a_spacenet_csv_naming_the_fix(run_alg, truth, tmp_path):
    with pytest.raises(QgsProcessingException, match=r"truth.csv has no geometry .*score two of them with "
                                                     r"'python -m sn6_footprints score"):
        run_alg("score_footprints", {"TRUTH": str(truth_spacenet_csv(tmp_path)), "PROPOSALS": str(truth),
                                     "OUTPUT_PROPOSALS": "TEMPORARY_OUTPUT", "OUTPUT_MISSED": "TEMPORARY_OUTPUT"})


def test_processing_score_repairs_invalid_truth_instead_of_stopping(run_alg, truth, tmp_path):
    """processing.run's default context stops on invalid geometries; the truth goes to the
    worker as it is, which repairs and counts it, as the CLI does."""
    log = LogFeedback()
    result = run_alg("score_footprints", {"TRUTH": str(truth_bowties(tmp_path)), "PROPOSALS": str(truth),
                                          "MIN_AREA": 1.0, "OUTPUT_PROPOSALS": "TEMPORARY_OUTPUT",
                                          "OUTPUT_MISSED": "TEMPORARY_OUTPUT"}, feedback=log)
    assert (result["TP"], result["FP"], result["FN"]) == (2, 0, 1)
    assert "repaired 3 invalid ground-truth polygon(s) with make_valid" in log.text


def train_params(scene, labels, output) -> dict:
    return {"INPUT_RASTERS": [str(scene)], "LABELS": [str(labels)], "OUTPUT_MODEL": str(output), "EPOCHS": 1,
            "STEPS_PER_EPOCH": 1, "TILE_SIZE": 64, "BATCH_SIZE": 1, "WIDTH": 0.125, "VALIDATION_SHARE": 0.0,
            "DEVICE": 2}


@pytest.mark.parametrize("case, message", [
    ("point_labels", f"truth_points holds points, {FIX}"),
    ("empty_labels", "The footprint layer(s) empty hold no polygons: training needs the building footprints"),
])
def test_processing_train_refuses_point_and_empty_labels_before_training(case, message, run_alg, scene, tmp_path,
                                                                         snapshot):
    labels = TRAIN_REFUSED[case][0](tmp_path)
    output = tmp_path / "model.pt"
    before = snapshot([scene, labels, tmp_path])
    log = LogFeedback()
    with pytest.raises(QgsProcessingException) as raised:
        run_alg("train_model", train_params(scene, labels, output), feedback=log)
    assert message in str(raised.value)
    assert "Worker:" not in log.text  # refused in QGIS, before the worker started
    assert not output.exists() and scratch_folders() == []
    assert_untouched(before)


# ---------------------------------------------------------------- qgis_process

@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    return install_plugin(tmp_path_factory)


def test_qgis_process_refuses_point_truth_and_scores_repaired_bowties(installed_plugins, model, tmp_path):
    scene = make_scene(tmp_path)
    base = ["--json", "run", "sn6_footprints:extract_footprints", "--", f"INPUT={scene}", f"MODEL={model}",
            "TILE_SIZE=64", "OVERLAP=0"]
    refused = qgis_process(installed_plugins, *base, f"GROUND_TRUTH={truth_points(tmp_path)}",
                           f"OUTPUT={tmp_path / 'refused.gpkg'}")
    assert refused.returncode != 0
    assert f"truth_points.gpkg holds points, {FIX}" in refused.stdout + refused.stderr
    assert not (tmp_path / "refused.gpkg").exists()
    scored = qgis_process(installed_plugins, *base, f"GROUND_TRUTH={truth_bowties(tmp_path)}",
                          f"OUTPUT={tmp_path / 'scored.gpkg'}")
    assert scored.returncode == 0, scored.stdout + scored.stderr
    results = json.loads(scored.stdout[scored.stdout.index("{"):])["results"]
    assert (results["TP"], results["FP"], results["FN"]) == (2, 0, 1)
    assert math.isclose(results["F1"], 0.8)
    assert "repaired 3 invalid ground-truth polygon(s)" in scored.stdout + scored.stderr


def test_cli_score_refuses_a_spacenet_csv_of_points(cli, tmp_path):
    truth = spacenet_csv(tmp_path / "truth.csv", [("img", i + 1, g) for i, g in enumerate(pixel_boxes())])
    points = spacenet_csv(tmp_path / "points.csv", [("img", i + 1, g.centroid) for i, g in enumerate(pixel_boxes())])
    code, _, stderr = cli("score", truth, points)
    assert code == 2
    assert f"points.csv holds points, {FIX} (PolygonWKT_Pix must hold polygons in pixel coordinates)" in stderr
