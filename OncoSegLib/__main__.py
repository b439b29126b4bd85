import sys

from OncoSegLib.cli import main

sys.exit(main())
