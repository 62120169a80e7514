from services.common.runtime import serve
from services.common.settings import get_settings

from .main import create_app

# Guarded: the snapshot builder is a spawned process, which imports this module again.
if __name__ == "__main__":
    serve(create_app(), get_settings(), "reports")
