"""Rendering cutouts as the 400x400 RGB images the detector sees (App. A):
Lupton for SDSS, asinh for HSC; label boxes in the rendered frame.
"""
