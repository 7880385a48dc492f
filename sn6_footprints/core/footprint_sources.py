"""Footprints to score, read from SpaceNet CSVs or any OGR vector source (QGIS-free).

SpaceNet CSVs (``ImageId, BuildingId, PolygonWKT_Pix[, Confidence]``) are in pixel space,
one image per ``ImageId``; WKT may be 2-D or 3-D, and a ``POLYGON EMPTY`` row is kept as an
empty geometry because it registers its image (an image with no buildings). Vector layers
are georeferenced: :func:`load_for_scoring` brings both sides into one CRS measured in
metres (the truth's CRS when projected, else the UTM zone at its centre), so areas are m²
and IoUs are not distorted by degrees.

Both kinds must hold polygons (:mod:`.truth` refuses points, lines and mixed layers). Vector
layers are repaired on reading with ``make_valid``, as extraction's truth and training's
labels are, and the repairs are counted in the log; SpaceNet CSVs keep the published
scorers' own rule for invalid polygons (the variant's ``buffer(0)`` or IoU 0), so their
reference numbers hold.
"""
from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import shapely

from . import vector_io
from .feedback import Feedback
from .truth import check_polygons, is_csv, read_polygon_layer, report_repairs

CSV_IMAGE_COLUMN = "ImageId"
CSV_ID_COLUMNS = ("BuildingId", "TileBuildingId")  # SN2-5 and SN6 truth files respectively
CSV_PIXEL_WKT_COLUMN = "PolygonWKT_Pix"
CSV_CONFIDENCE_COLUMN = "Confidence"
# Proposal fields taken as confidence when none is named (solaris's default is "conf").
CONFIDENCE_FIELD_NAMES = ("confidence", "conf")


@dataclass
class FootprintSource:
    """Geometries with what scoring needs to know about them, aligned by position."""

    path: Path
    geometries: list
    feature_ids: list
    image_ids: list | None = None
    confidence: list[float] | None = None
    crs_wkt: str | None = None
    pixel_space: bool = False
    repaired: int = 0   # invalid polygons made valid on reading (vector layers)
    emptied: int = 0    # of those, the ones with no area left (now None)

    def __len__(self) -> int:
        return len(self.geometries)


def _column(header: list[str], wanted: str) -> str | None:
    """The header name matching ``wanted`` regardless of case (SpaceNet files vary)."""
    for name in header:
        if name.strip().lower() == wanted.lower():
            return name
    return None


def _ids(values: list[str]) -> list:
    """Integer ids when every value is one (BuildingId), else the strings as written."""
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return list(values)


def read_spacenet_csv(path: str | os.PathLike) -> FootprintSource:
    """A SpaceNet truth or proposal CSV in pixel coordinates; ids from ``BuildingId`` (or
    ``TileBuildingId``, SpaceNet 6 truth), else the row number."""
    path = Path(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # building WKT can be very long
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        image_column = _column(header, CSV_IMAGE_COLUMN)
        wkt_column = _column(header, CSV_PIXEL_WKT_COLUMN)
        if image_column is None or wkt_column is None:
            hint = (" (only PolygonWKT_Geo found: scoring CSVs uses pixel WKT; convert geographic "
                    "footprints to a vector file instead)" if _column(header, "PolygonWKT_Geo") else "")
            raise ValueError(f"{path} is not a SpaceNet CSV: it needs columns {CSV_IMAGE_COLUMN} and "
                             f"{CSV_PIXEL_WKT_COLUMN}, found {', '.join(header) or 'none'}{hint}")
        id_column = next((c for c in (_column(header, n) for n in CSV_ID_COLUMNS) if c), None)
        confidence_column = _column(header, CSV_CONFIDENCE_COLUMN)
        rows = list(reader)
    wkts = [(row[wkt_column] or "").strip() or None for row in rows]  # blank: no geometry
    try:
        geometries = shapely.from_wkt(wkts)
    except shapely.errors.GEOSException:
        for line, wkt in enumerate(wkts, start=2):
            try:
                shapely.from_wkt(wkt)
            except shapely.errors.GEOSException as exc:
                raise ValueError(f"{path}, line {line}: unreadable {wkt_column} {wkt[:60]!r}: {exc}") from None
        raise
    geometries = shapely.force_2d(geometries)
    check_polygons(geometries, path.name, hint=" (PolygonWKT_Pix must hold polygons in pixel coordinates)")
    confidence = None
    if confidence_column is not None:
        confidence = []
        for line, row in enumerate(rows, start=2):
            text = (row[confidence_column] or "").strip()
            try:
                confidence.append(float(text) if text else float("nan"))
            except ValueError:
                raise ValueError(f"{path}, line {line}: {confidence_column} {text!r} is not a number") from None
    return FootprintSource(
        path=path, geometries=list(geometries),
        feature_ids=_ids([row[id_column] for row in rows]) if id_column else list(range(len(rows))),
        image_ids=[row[image_column] for row in rows], confidence=confidence, pixel_space=True)


def _field(table, name: str, path: Path) -> list:
    if name in table.attributes:
        return table.attributes[name]
    for existing in table.attributes:
        if existing.lower() == name.lower():
            return table.attributes[existing]
    raise ValueError(f"{path} has no field {name!r}; its fields are {', '.join(table.attributes) or 'none'}")


def read_vector_source(path: str | os.PathLike, *, image_field: str | None = None,
                       id_field: str | None = None, confidence_field: str | None = None,
                       guess_confidence: bool = False) -> FootprintSource:
    """One OGR layer in its own CRS. ``guess_confidence`` takes a field named ``confidence``
    or ``conf`` (any case) when ``confidence_field`` is not given. Only polygon layers are
    accepted; invalid polygons are repaired with ``make_valid`` (:mod:`.truth`)."""
    path = Path(path)
    table = read_polygon_layer(path)
    if confidence_field is None and guess_confidence:
        lower = {name.lower(): name for name in table.attributes}
        confidence_field = next((lower[n] for n in CONFIDENCE_FIELD_NAMES if n in lower), None)
    confidence = None
    if confidence_field is not None:
        confidence = [float("nan") if v is None else float(v) for v in _field(table, confidence_field, path)]
    return FootprintSource(
        path=path, geometries=list(table.geometries),
        feature_ids=list(_field(table, id_field, path)) if id_field else list(range(len(table))),
        image_ids=list(_field(table, image_field, path)) if image_field else None,
        confidence=confidence, crs_wkt=table.crs_wkt, repaired=table.repaired, emptied=table.emptied)


def _warn_if_empty(truth: FootprintSource, feedback: Feedback) -> None:
    if not any(g is not None and not g.is_empty for g in truth.geometries):
        feedback.warning("the ground truth has no polygons: every proposal is a false positive")


def _moved(geometries: list, source_crs, target_crs) -> list:
    present = [i for i, g in enumerate(geometries) if g is not None]
    moved = list(geometries)
    for i, g in zip(present, vector_io.reproject([geometries[i] for i in present], source_crs, target_crs)):
        moved[i] = g
    return moved


def load_for_scoring(truth_path: str | os.PathLike, proposals_path: str | os.PathLike, *,
                     image_field: str | None = None, truth_id_field: str | None = None,
                     proposal_id_field: str | None = None, confidence_field: str | None = None,
                     feedback: Feedback | None = None) -> tuple[FootprintSource, FootprintSource, str | None]:
    """Truth and proposals ready for :func:`score_footprints`, plus the CRS they are now in
    (``None`` for pixel-space CSVs or when neither layer has a CRS).

    Both must be SpaceNet CSVs or both vector layers. Layers are reprojected into the
    truth's CRS, or into the UTM zone at the truth's centre when that CRS is geographic.
    """
    feedback = feedback or Feedback()
    for path in (truth_path, proposals_path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist")
    csv_sides = is_csv(truth_path), is_csv(proposals_path)
    if all(csv_sides):
        if image_field or truth_id_field or proposal_id_field or confidence_field:
            feedback.warning("field options apply to vector layers; SpaceNet CSVs use ImageId, "
                             "BuildingId and Confidence")
        truth, proposals = read_spacenet_csv(truth_path), read_spacenet_csv(proposals_path)
        _warn_if_empty(truth, feedback)
        return truth, proposals, None
    if any(csv_sides):
        raise ValueError("truth and proposals must both be SpaceNet CSVs (pixel space) or both "
                         "vector layers (georeferenced); got one of each")

    truth = read_vector_source(truth_path, image_field=image_field, id_field=truth_id_field)
    proposals = read_vector_source(proposals_path, image_field=image_field, id_field=proposal_id_field,
                                   confidence_field=confidence_field, guess_confidence=True)
    report_repairs(truth, "ground-truth", feedback)
    report_repairs(proposals, "proposal", feedback)
    _warn_if_empty(truth, feedback)
    if truth.crs_wkt is None and proposals.crs_wkt is None:
        feedback.warning("neither layer has a CRS: areas are measured in the layers' own units")
        return truth, proposals, None
    if truth.crs_wkt is None or proposals.crs_wkt is None:
        known, unknown = (truth, proposals) if truth.crs_wkt else (proposals, truth)
        feedback.warning(f"{unknown.path.name} has no CRS: taken to be that of {known.path.name}")
        unknown.crs_wkt = known.crs_wkt
    reference = truth if any(g is not None for g in truth.geometries) else proposals
    target = vector_io.metric_crs(truth.crs_wkt, _moved(reference.geometries, reference.crs_wkt, truth.crs_wkt))
    for side in (truth, proposals):
        side.geometries = _moved(side.geometries, side.crs_wkt, target)
        side.crs_wkt = vector_io.crs_wkt(target)
    return truth, proposals, target
