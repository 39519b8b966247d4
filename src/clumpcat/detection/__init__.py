"""The Faster R-CNN detector (Section 4.1, Table 2): model, backbone weights,
checkpoints, training data, training (Section 4.2, DDP), inference.
"""
