#!/usr/bin/env python
"""The django-guardian test site plus an app of faults (faultapp), for
test_publisher_faults: the publisher's admin paths, audiences and deletes."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
# This site's apps, the guardian site's (tickets, its settings), and the
# repository for wsserver.publisher.
sys.path[:0] = [str(HERE), str(TESTS / "guardiansite"), str(TESTS.parent)]

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "faultsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
