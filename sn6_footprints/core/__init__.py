"""The QGIS-free core of sn6_footprints.

Nothing in this package imports ``qgis``: the Processing algorithms, the CLI
(``python -m sn6_footprints``), the tests and the benchmarks all drive the same code.
Data flows one way: raster windows -> normalised batches -> model -> blended
probabilities -> mask -> polygons -> (score).
"""
