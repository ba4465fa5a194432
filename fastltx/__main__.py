import sys

from fastltx.cli import main

sys.exit(main())
