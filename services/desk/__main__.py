from services.common.runtime import serve
from services.common.settings import get_settings

from .main import create_app

serve(create_app(), get_settings(), "desk")
