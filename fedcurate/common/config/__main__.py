"""Print the configuration reference, or rewrite it in a README between its markers (`make docs`).

    python -m fedcurate.common.config              # the reference, as Markdown, on stdout
    python -m fedcurate.common.config README.md    # replace README.md's config-reference section
"""

import sys

from fedcurate.common.config.reference import reference_markdown, update_readme

if len(sys.argv) > 1:
    update_readme(sys.argv[1])
else:
    print(reference_markdown(), end="")
