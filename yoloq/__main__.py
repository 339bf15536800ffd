"""``python -m yoloq`` is the ``yoloq`` command."""

from yoloq.cli.main import main

if __name__ == "__main__":
    main()
