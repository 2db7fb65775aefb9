"""The studio's embedded text-to-image latent diffusion model: data, autoencoder, diffusion, export.

Trained from scratch on renders of the procedural world (world/); see docs/embedded-model.md.
"""
