"""Survey inputs: the galaxy table, the cutout contract, fetching (SDSS, HSC),
the synthetic survey, clump injection (App. F) and HSC cross-matches.
"""
