"""Releasing the exercises and grading a class (for instructors; walkthrough in ``docs/grading.md``).

* ``release``: ``course-release`` writes ``exercises/`` from ``solutions/`` (``--check`` for CI);
  also the solution markers and the check cells' metadata, which the grader reads too;
* ``grade``: ``course-grade``, the command, running the steps below for every submission;
* ``assignment``: reads the solution's checks and the modules they import; finds the submissions;
* ``rebuild``: the notebook to execute, learner's code cells and the solution's check cells;
* ``execute``: one submission in a worker process: the learner's cells in a sandboxed kernel, the checks
  in the worker, talking to the kernel in plain data only (``course_utils.checks.learner``);
* ``kernel``: the learner's kernel process (limits and sandbox first, then ipykernel and the requests' server);
* ``sandbox``: the kernel's limits (memory, CPU, file size) and its Landlock sandbox;
* ``score``: points and reasons from the worker's records;
* ``names``: what a cell imports, defines and reads, found by parsing it;
* ``gradebook``: the gradebook CSV and the Markdown feedback;
* ``processes``: the subreaper and the helpers that find and stop child processes;
* ``constants``: the course's folders.
"""
