import sys

from keyscope_server.cli import main

sys.exit(main())
