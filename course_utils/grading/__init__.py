"""Releasing the exercises and grading a class (for instructors; walkthrough in ``docs/grading.md``).

* ``release``: ``course-release`` writes ``exercises/`` from ``solutions/`` (``--check`` for CI);
  also the solution markers and the check cells' metadata, which the grader reads too;
* ``grade``: ``course-grade``, the command, running the steps below for every submission;
* ``assignment``: reads the solution's checks and the sources the kernels need; finds the submissions;
* ``rebuild``: the notebook to execute, learner's code cells and the solution's check cells;
* ``execute``: one submission under nbval, in a private folder and its own process;
* ``kernel``: the grader inside the learner's kernel (snapshot, fresh checks, tokens);
* ``sandbox``: the kernel's limits (memory, CPU, file size, output) and its Landlock sandbox;
* ``plugin``: the pytest plugin that reports each cell to the grader;
* ``score``: points and reasons from those reports;
* ``names``: what a cell imports, defines and reads, found by parsing it;
* ``gradebook``: the gradebook CSV and the Markdown feedback;
* ``processes``: the subreaper and the helpers that find and stop child processes;
* ``constants``: the course's folders, the token's MIME type, the report pipe's variable.
"""
