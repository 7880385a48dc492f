"""The inference engine: raster windows -> normalised batches -> model -> blended probabilities.

``tiling`` plans the windows and their blending, ``predictor`` runs the model on batches,
``probabilities`` streams rows of tiles into the blended probability of every pixel.
"""
