import sys

from nbdscope.cli import main

sys.exit(main())
