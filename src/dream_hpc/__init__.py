"""dream-hpc: simulate and calibrate a JWST NIRCam imaging survey, reproducibly, on one machine or a cluster."""

__version__ = "0.1.0"
