#!/usr/bin/env python
"""A main site with django-guardian, for the WSSERVER_MODELS tests."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The site's apps, and the repository for wsserver.publisher.
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardiansite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
