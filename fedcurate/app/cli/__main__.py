"""`python -m fedcurate.app.cli ...`: the `fedcurate` command without the installed script.

    python -m fedcurate.app.cli validate configs/centralized.toml
"""

import sys

from fedcurate.app.cli import main

sys.exit(main())
