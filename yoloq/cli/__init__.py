"""The ``yoloq`` command: one module per command group, each importing its heavy dependencies inside the command
that needs them, so that ``yoloq --help`` starts at Python speed. The console script is ``yoloq.cli.main:main``."""
