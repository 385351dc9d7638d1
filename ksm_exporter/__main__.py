import sys

from ksm_exporter.cli import main

sys.exit(main())
