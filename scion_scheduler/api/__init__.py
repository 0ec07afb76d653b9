"""The HTTP control API the Scion hub calls (`scion-scheduler serve`)."""

from scion_scheduler.api.app import ApiContext, create_app
from scion_scheduler.api.auth import Authenticator, OidcPolicy

__all__ = ["ApiContext", "Authenticator", "OidcPolicy", "create_app"]
