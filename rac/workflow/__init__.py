"""rac's workflows on top of the generic engine: the `rac plan` preview and its estimates, the review of
a recipe change (`rac diff`), grid cells run locally, on Ray or on Slurm. They plan and run through
``rac.app``; the engine (``rac.pipeline``) never imports them."""
