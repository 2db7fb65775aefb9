"""Hot rendering ops (rasterisers, splatters): pure torch first, CUDA backends imported lazily inside functions."""
