"""The bottom layer: run directory, journal (write, read, verify), the read model of a run, digests, units."""
