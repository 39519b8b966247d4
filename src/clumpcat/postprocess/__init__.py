"""Post-processing of raw detections (Section 4.3): NMS, merging within the
r-band PSF FWHM, the host-galaxy segment (4.3.2).
"""
