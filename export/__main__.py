"""``python -m export``: see ``export.command``."""

from export.command import main
from toolkit import cli

if __name__ == "__main__":
    cli.entry_point(main)
