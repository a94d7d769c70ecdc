"""Reference files: CRDS best references per unit, and checking a cache or kit is intact."""
