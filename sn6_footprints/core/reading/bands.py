"""Which raster band feeds which of the model's polarisations.

A quad-pol product may store HH, HV, VH, VV in any order; the band descriptions say which is
which when they name a polarisation (``HH``, ``Sigma0_VV_db``, ``vh``...). Otherwise a *Band
order* (``4,3,2,1``: raster bands for the model's bands, in the model's order) does, and a
raster with exactly the model's band count and no names is read in its own order, said in
the log.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..raster_windows import RasterError

POLARISATIONS = ("HH", "HV", "VH", "VV")
_POLARISATION = re.compile(r"(?<![A-Za-z])(HH|HV|VH|VV)(?![A-Za-z])", re.IGNORECASE)
BAND_ORDER_FIX = "set Band order (--band-order), e.g. 4,3,2,1: the raster band for each of the model's bands"


@dataclass(frozen=True)
class BandMapping:
    """1-based raster bands in the model's band order, and how they were chosen (for the log)."""

    indexes: tuple[int, ...]
    how: str


def polarisation_of(description: str | None) -> str | None:
    """The one polarisation a band description names, else None (none, or two different ones)."""
    found = {m.upper() for m in _POLARISATION.findall(description or "")}
    return found.pop() if len(found) == 1 else None


def parse_band_order(text) -> tuple[int, ...] | None:
    """``"4,3,2,1"`` (or a sequence) as a tuple of ints; empty: None. Refuses anything else."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    items = text.replace(";", ",").replace(" ", ",").split(",") if isinstance(text, str) else list(text)
    try:
        order = tuple(int(str(i).strip()) for i in items if str(i).strip())
    except ValueError:
        raise RasterError(f"Band order {text!r} is not a list of band numbers; write it like 4,3,2,1.") from None
    return order or None


def map_bands(descriptions, model_bands, band_order=None, raster_name: str = "The raster") -> BandMapping:
    """The raster bands (``descriptions``: one per band, None where unnamed) for ``model_bands``."""
    count, wanted = len(descriptions), tuple(model_bands)
    if band_order is not None:
        order = tuple(band_order)
        if len(order) != len(wanted):
            raise RasterError(f"Band order {','.join(map(str, order))} names {len(order)} band(s); the model takes "
                              f"{len(wanted)} ({', '.join(wanted)}): give one raster band for each.")
        bad = [b for b in order if not 1 <= b <= count]
        if bad:
            raise RasterError(f"Band order {','.join(map(str, order))} names band {bad[0]}, but {raster_name} has "
                              f"bands 1 to {count}.")
        twice = sorted({b for b in order if order.count(b) > 1})
        if twice:
            raise RasterError(f"Band order {','.join(map(str, order))} uses band {', '.join(map(str, twice))} more "
                              "than once; give each model band its own raster band.")
        pairs = ", ".join(f"{name} = band {b}" for name, b in zip(wanted, order))
        return BandMapping(order, f"bands as set by Band order: {pairs}")
    named = [polarisation_of(d) for d in descriptions]
    if any(named) and all(w.upper() in POLARISATIONS for w in wanted):
        where = {}
        for index, pol in enumerate(named, start=1):
            if pol is not None:
                where.setdefault(pol, []).append(index)
        twice = [p for p, idx in where.items() if len(idx) > 1 and p in {w.upper() for w in wanted}]
        if twice:
            raise RasterError(f"{raster_name} has more than one {twice[0]} band (bands "
                              f"{', '.join(map(str, where[twice[0]]))}); {BAND_ORDER_FIX}.")
        missing = [w for w in wanted if w.upper() not in where]
        if missing:
            present = ", ".join(p for p in POLARISATIONS if p in where) or "none"
            raise RasterError(
                f"{raster_name} has the polarisation(s) {present} but the model needs {', '.join(wanted)}: "
                f"{', '.join(missing)} missing. Use a product with those bands, or train a model on "
                f"{present} ('Train footprint model' takes any bands); if the descriptions are wrong, "
                f"{BAND_ORDER_FIX}.")
        order = tuple(where[w.upper()][0] for w in wanted)
        how = "bands by their descriptions: " + ", ".join(f"{w} = band {b}" for w, b in zip(wanted, order))
        return BandMapping(order, how)
    if count == len(wanted):
        pairs = ", ".join(f"{w} = band {i}" for i, w in enumerate(wanted, 1))
        return BandMapping(tuple(range(1, count + 1)),
                           f"bands in the raster's order ({pairs}): no band description names a polarisation; "
                           f"if that is not the order, {BAND_ORDER_FIX}")
    raise RasterError(f"{raster_name} has {count} band(s) but the model expects {len(wanted)} "
                      f"({', '.join(wanted)}) and no band description names a polarisation; "
                      f"{BAND_ORDER_FIX}, or use a model trained on {count} band(s).")
