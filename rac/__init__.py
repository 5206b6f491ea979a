"""rac: Reasoning-Aware Compression of reasoning language models."""

__version__ = "0.1.0"
RECIPE_VERSIONS = (1,)


def __getattr__(name: str):  # lazy: ``import rac`` stays torch-free
    if name in ("run", "RunOutput"):
        from rac import api

        return getattr(api, name)
    raise AttributeError(f"module 'rac' has no attribute {name!r}")
