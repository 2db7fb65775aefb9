"""Hot ops used by representations (rasterisers, isosurface extraction), pure torch first; CUDA backends lazily."""
