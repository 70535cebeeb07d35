import sys

from neurflow.cli import main

sys.exit(main())
