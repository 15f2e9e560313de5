#!/usr/bin/env python
"""The example main site: a plain Django project that installs wsserver.publisher."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The example's apps, and the repository for wsserver.publisher when the
# project is not installed.
sys.path[:0] = [str(HERE), str(HERE.parent)]

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
