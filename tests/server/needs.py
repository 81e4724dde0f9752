"""Skip markers for deployment tests that need system programs; in CI (FEDCURATE_REQUIRE_NGINX=1) they fail
instead, so a missing nginx can never pass silently."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HAS_NGINX = bool(shutil.which("nginx")) or Path("/usr/sbin/nginx").is_file()
needs_nginx = pytest.mark.skipif(not HAS_NGINX and os.environ.get("FEDCURATE_REQUIRE_NGINX") != "1",
                                 reason="nginx not installed (apt-get install nginx-light); it fronts the SuperLink")
