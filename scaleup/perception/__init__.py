"""Perception for the scale-up jobs: faces, attribute classifiers and image embedders (seed 000, [0108], [0120]-[0124]).

Images are float tensors (B, 3, H, W), RGB, in [0, 1]; boxes are (x0, y0, x1, y1) pixel floats. Every component
takes already-loaded model objects (``scaleup.models`` loads them); nothing here reaches a model hub.
"""
