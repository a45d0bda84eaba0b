"""`python -m gfa_keras ...` runs the `gfa-keras` command."""
import sys

from gfa_keras.cli import main

if __name__ == "__main__":
    sys.exit(main())
