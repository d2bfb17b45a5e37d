"""Exercise checks, one module per chapter (``course_utils.checks.convolution`` for chapter 01, ...).

Every check takes the learner's function or model, runs it on fixed and random
cases, compares with an independent reference (torch, scipy, torchvision; never
this package's own implementation of the same thing) and either prints a one-line
summary or raises ``AssertionError`` naming the case, the expected and the
received value or shape. ``course_utils.checks.common`` holds the shared helpers.

How a check reaches the learner's code (``course_utils.checks.learner``): only through ``common.call`` (run
the learner's function, class or model) and ``learner.run(probe, ...)`` (run a ``learner_...`` function of a
check module where the learner's objects live; it returns plain data). Under ``course-grade`` the check runs
in the grader's process and those two calls cross to the learner's kernel as plain data; in a learner's
notebook they simply call. A check never reads attributes of, or calls methods on, the learner's objects
itself, and never sends an object it built (build it inside a probe from plain arguments instead).
"""
