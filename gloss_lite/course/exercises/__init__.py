"""The catalogue of coded exercises: one module per notebook, each exercise beside its reference.

``EXERCISES`` lists every exercise by id (``"NN.k"``: notebook ``NN``, exercise ``k``), in the
course's order. ``exNN.py`` holds notebook NN's exercises: for each, its random inputs, its
reference (the package's own function where the package has one, else written out there) and
its checker, then the notebook's ``EXERCISES``; ``inputs.py`` holds the random inputs that several
notebooks share. To add an exercise, add its entry to its notebook's module (and a notebook's
module to the list below); ``gloss_lite.course.checking.check`` and the grader find it here.

References that need a heavy module (transformers, scikit-learn, pandas) import it inside the
reference, so that importing the catalogue (every notebook's first cell imports ``check``)
loads only torch and the method.
"""

from . import ex00, ex01, ex02, ex03, ex04, ex05, ex06, ex07, ex08

NOTEBOOK_MODULES = (ex00, ex01, ex02, ex03, ex04, ex05, ex06, ex07, ex08)
EXERCISES = {exercise_id: exercise for module in NOTEBOOK_MODULES for exercise_id, exercise in module.EXERCISES.items()}
