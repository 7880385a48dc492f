"""The worker process: how QGIS's process runs the core without importing it.

Everything in this package uses the standard library only, so QGIS's own Python (which has
no torch, rasterio or shapely) can import it; the core runs in the worker environment.
"""
