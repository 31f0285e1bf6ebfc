import sys

from relay.cli import main

if __name__ == "__main__":  # not again in a crypto worker (multiprocessing spawn)
    sys.exit(main())
