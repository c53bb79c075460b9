import sys

from bsbench.report.cli import main

sys.exit(main())
