"""dream-hpc's `calwebb_*`: survey, mosaic and reproduce compose the engine and the end-of-run summary."""
