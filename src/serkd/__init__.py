"""serkd: distil self-supervised speech models into small speech-emotion-recognition students."""

__version__ = "0.1.0"
