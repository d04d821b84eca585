import sys

from contrastlib.cli.main import main

sys.exit(main())
