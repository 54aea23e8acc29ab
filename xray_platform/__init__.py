"""xrp: does this diffraction shot show one lattice or several, and to what resolution (Å)?"""

__version__ = "0.1.0"
