"""Evaluation (Section 4.4, App. D, App. F): completeness and purity against
truth, COCO metrics, the classical baseline and the report figures.
"""
