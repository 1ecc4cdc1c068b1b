"""``python -m gloss_lite.course``: execute the course's notebooks (``gloss_lite.course.run``)."""

from .run import main

raise SystemExit(main())
