"""The module ``bentofile.yaml`` names: ``bentoml serve`` and ``bentoml build`` import it. It reads the settings from
the ``RESNET_LAB_*`` variables and builds the service (``service.app.build_service``); a setting, model file or key
file it cannot use stops the server here with one line naming it, before any worker starts."""

from service.app import build_service
from service.settings import Settings
from toolkit.errors import UsageError

try:
    VisionService = build_service(Settings.from_env())
except (UsageError, OSError) as problem:
    raise SystemExit(f"resnet-lab service: {problem}") from None
