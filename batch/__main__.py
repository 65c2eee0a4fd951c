"""``python -m batch`` (``batch.command``): a mistake, or Ray missing, is one line and exit code 2."""

import sys

from toolkit.cli import USAGE_EXIT_CODE, entry_point

if __name__ == "__main__":
    try:
        from batch.command import main
    except ImportError as missing:  # Ray, pyarrow: the optional extra
        print(f"error: {missing}; install the batch extra: pip install 'resnet-lab[batch]'", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None
    entry_point(main)
