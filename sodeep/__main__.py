"""``python -m sodeep``: the ``sodeep`` console script (:func:`sodeep.cli.main`)."""

from sodeep.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
