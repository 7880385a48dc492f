"""Writes the ready-made graphical model resources/models/extract_and_score.model3:
Extract building footprints -> Score building footprints (SpaceNet F1) against ground truth.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_extract_and_score_model.py [OUTPUT]

The generated file is committed; rerun this after changing the algorithms' parameters.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "resources" / "models" / "extract_and_score.model3"

HELP = ("Extracts building footprints from a SAR raster with a TernausNet U-Net (the bundled model, or the "
        "model file given) and scores them against ground-truth polygons with the SpaceNet F1 metric "
        "(IoU > 0.5, official SpaceNet 6 rules). Outputs: the footprints, the scored proposals (TP green, "
        "FP red), the missed buildings (FN) and F1, precision and recall.")


def build_model():
    from qgis.core import (QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource as Source, QgsProcessingModelOutput,
                           QgsProcessingModelParameter, QgsProcessing, QgsProcessingParameterFeatureSource,
                           QgsProcessingParameterFile, QgsProcessingParameterRasterLayer)
    from qgis.PyQt.QtCore import QPointF

    from sn6_footprints.core.devices import DEVICE_CHOICES

    model = QgsProcessingModelAlgorithm("Extract and score building footprints", "SN6 Footprints",
                                        "extract_and_score")
    model.setHelpContent({"ALG_DESC": HELP, "ALG_CREATOR": "sn6_footprints",
                          "sar": "SAR raster with the bands the model expects (SN6: HH, HV, VH, VV).",
                          "truth": "Ground-truth building polygons, any CRS.",
                          "weights": "UNet11 checkpoint; empty: the bundled model."})
    inputs = (
        (QgsProcessingParameterRasterLayer("sar", "SAR raster"), QPointF(120, 80)),
        (QgsProcessingParameterFile("weights", "Model file (empty: bundled model)", optional=True,
                                    fileFilter="PyTorch checkpoints (*.pt *.pth *.model);;All files (*.*)"),
         QPointF(380, 80)),
        (QgsProcessingParameterFeatureSource("truth", "Ground-truth footprints",
                                             [QgsProcessing.TypeVectorPolygon]), QPointF(640, 80)),
    )
    for parameter, position in inputs:
        component = QgsProcessingModelParameter(parameter.name())
        component.setPosition(position)
        model.addModelParameter(parameter, component)

    def fill_defaults(child, fixed=None):
        """Static values for the child's other parameters, as the modeler's dialog stores them:
        the algorithm's defaults (``fixed`` overrides); optional ones without a default stay unset."""
        algorithm = child.algorithm()
        if algorithm is None:
            raise SystemExit(f"algorithm {child.algorithmId()} not found: is the provider loadable?")
        fixed = fixed or {}
        for definition in algorithm.parameterDefinitions():
            name = definition.name()
            if definition.isDestination() or name in child.parameterSources():
                continue
            value = fixed.get(name, definition.defaultValue())
            if value is None and definition.flags() & definition.FlagOptional:
                continue
            child.addParameterSources(name, [Source.fromStaticValue(value)])

    def output(name, description, child_output, position):
        result = QgsProcessingModelOutput(name, description)
        result.setChildOutputName(child_output)
        result.setPosition(position)
        return result

    extract = QgsProcessingModelChildAlgorithm("sn6_footprints:extract_footprints")
    extract.setChildId("extract")
    extract.setDescription("Extract building footprints")
    extract.setPosition(QPointF(250, 230))
    extract.addParameterSources("INPUT", [Source.fromModelParameter("sar")])
    extract.addParameterSources("MODEL", [Source.fromModelParameter("weights")])
    extract.setModelOutputs({"footprints": output("footprints", "Building footprints", "OUTPUT",
                                                  QPointF(120, 330))})
    # Device auto (CUDA when PyTorch sees a GPU, else CPU), whatever this machine's default setting is.
    fill_defaults(extract, {"DEVICE": DEVICE_CHOICES.index("auto")})
    model.addChildAlgorithm(extract)

    score = QgsProcessingModelChildAlgorithm("sn6_footprints:score_footprints")
    score.setChildId("score")
    score.setDescription("Score building footprints (SpaceNet F1)")
    score.setPosition(QPointF(520, 400))
    score.addParameterSources("TRUTH", [Source.fromModelParameter("truth")])
    score.addParameterSources("PROPOSALS", [Source.fromChildOutput("extract", "OUTPUT")])
    score.setModelOutputs({
        "scored": output("scored", "Scored proposals", "OUTPUT_PROPOSALS", QPointF(380, 520)),
        "missed": output("missed", "Missed buildings (FN)", "OUTPUT_MISSED", QPointF(660, 520)),
        # Numbers: the modeler returns them as results (score:F1, ...), with no destination to choose.
        "F1": output("F1", "F1", "F1", QPointF(800, 460)),
        "PRECISION": output("PRECISION", "Precision", "PRECISION", QPointF(800, 500)),
        "RECALL": output("RECALL", "Recall", "RECALL", QPointF(800, 540)),
    })
    fill_defaults(score)
    model.addChildAlgorithm(score)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["QT_HASH_SEED"] = "0"  # the same XML attribute order on every run: a stable diff
    sys.path.insert(0, str(REPO_ROOT))
    sys.path.append("/usr/share/qgis/python/plugins")  # Debian's Processing plugin
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    from sn6_footprints.processing_provider.provider import Sn6FootprintsProvider

    Processing.initialize()
    provider = Sn6FootprintsProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    model = build_model()
    valid, errors = model.validate()
    if not valid:
        raise SystemExit("the model does not validate: " + "; ".join(errors))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not model.toFile(str(args.output)):
        raise SystemExit(f"could not write {args.output}")
    print(f"wrote {args.output}")
    QgsApplication.processingRegistry().removeProvider(provider)
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
