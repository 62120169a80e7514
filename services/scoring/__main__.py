"""`python -m services.scoring`: a faust worker serving health and metrics on CRM_SCORING_PORT."""

import sys

from services.common.settings import get_settings

from .main import create_app

settings = get_settings()
app = create_app(settings)
# faust's log level is "warn", not "warning".
sys.argv = [
    sys.argv[0],
    "worker",
    "--loglevel",
    "warn",
    "--web-port",
    str(settings.scoring_port),
    "--web-bind",
    settings.host,
]
app.main()
