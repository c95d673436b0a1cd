import sys

from greyelephant.cli import main

if __name__ == "__main__":
    sys.exit(main())
