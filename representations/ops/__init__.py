"""Hot ops used by representations (rasterisers, splatters, isosurface extraction): pure torch first, CUDA
backends imported lazily inside functions."""
