"""rac: Reasoning-Aware Compression of reasoning language models."""

__version__ = "0.1.0"
RECIPE_VERSIONS = (1,)
