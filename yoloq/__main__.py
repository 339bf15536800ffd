"""``python -m yoloq`` is the ``yoloq`` command."""

from infra.cli import main

if __name__ == "__main__":
    main()
