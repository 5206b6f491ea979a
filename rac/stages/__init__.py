"""Pipeline stages, one module each (``STAGE = Stage(...)``); the registry in pipeline order is
``rac.app.STAGE_ORDER``. A stage imports shared lower modules, never another stage module."""
