"""At the beamline: the run store and `xrp watch` (no Ray)."""
