"""``python -m service.batch`` (``service.batch.command``): a mistake, or Ray missing, is one line and exit code 2."""

import sys

USAGE_EXIT_CODE = 2  # what argparse exits with on a bad flag

if __name__ == "__main__":
    try:
        from service.batch.command import main
        from service.batch.job import BatchError
    except ImportError as missing:  # Ray, pyarrow: the optional extra
        print(f"error: {missing}; install the batch extra: pip install 'resnet-lab[batch]'", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None
    try:
        main()
    except BatchError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None
