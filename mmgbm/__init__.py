"""mmgbm: predict product attributes from a catalogue with frozen encoders and LightGBM."""

__version__ = "0.1.0"
