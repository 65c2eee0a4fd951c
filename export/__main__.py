"""``python -m export``: see ``export.command``."""

from export.command import main
from training import cli

if __name__ == "__main__":
    cli.entry_point(main)
