"""Text-to-3D studio: the run loop, configuration, CLI and export. Import is cheap (no torch)."""

__version__ = "0.1.0"
