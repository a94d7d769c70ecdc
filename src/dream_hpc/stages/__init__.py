"""The science chain: the stage contract, Mirage and the jwst pipelines per unit, Image3, the science check."""
