"""Exercise checks, one module per chapter (``course_utils.checks.convolution`` for chapter 01, ...).

Every check takes the learner's function or model, runs it on fixed and random
cases, compares with an independent reference (torch, scipy, torchvision; never
this package's own implementation of the same thing) and either prints a one-line
summary or raises ``AssertionError`` naming the case, the expected and the
received value or shape. ``course_utils.checks.common`` holds the shared helpers.
"""
