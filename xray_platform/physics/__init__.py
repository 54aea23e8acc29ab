"""Physics of a still shot: geometry, crystal, rendering, labels. Pure numpy/torch, no Ray."""
