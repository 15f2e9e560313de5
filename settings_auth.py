"""Settings of the sidecar's stripped-down Django project (DJANGO_SETTINGS_MODULE).

Everything comes from the environment through wsserver.config; see
``python -m wsserver --help``.
"""

from wsserver.config import get_config
from wsserver.djangosettings import django_settings

globals().update(django_settings(get_config()))
