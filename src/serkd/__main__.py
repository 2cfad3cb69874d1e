import sys

from serkd.cli import main

sys.exit(main())
