"""mmgbm: predict product attributes from a catalogue with frozen encoders and LightGBM."""

import os

# OpenMP threads that spin while waiting make LightGBM ~100x slower when the cores are shared with other busy
# processes (a CI runner, a laptop); passive waiting costs nothing measurable when they are not. It must be set
# before anything (LightGBM, scikit-learn) loads the OpenMP runtime, so it lives here, first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
