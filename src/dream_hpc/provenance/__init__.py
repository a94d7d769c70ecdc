"""The record of a run: facts, provenance.h5 (write, read), audit, compare, PROV-JSON."""
