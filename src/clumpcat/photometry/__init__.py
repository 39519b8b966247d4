"""Clump photometry (App. E): apertures, annulus background, aperture
correction, Jy and AB magnitudes, Galactic extinction.
"""
