"""The survey plan: pointings and dithers to work units, their cost, their footprint on the sky."""
