"""The bad-input matrix of issue 11: rasters, models, parameters, ground truth, outputs and faults."""
