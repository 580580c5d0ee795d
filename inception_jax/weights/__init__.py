"""Pretrained weights: reading torchvision's and BVLC's files into our networks."""
