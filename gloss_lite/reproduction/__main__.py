"""``python -m gloss_lite.reproduction``: the grid of ``gloss_lite.reproduction.run``."""

from .run import main

raise SystemExit(main())
