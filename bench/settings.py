"""Settings for the throughput benchmark: the project's own, plus two floor views.

bench/portal_throughput.py sets the environment (DEBUG off, a throwaway database and
var directory) before gunicorn imports this; nothing here changes how the portal behaves.
"""

from civicdesk.settings import *  # noqa: F403
from civicdesk.settings import VAR_DIR

ROOT_URLCONF = "bench.floor_urls"
# DEBUG is off, so the manifest static storage needs a collectstatic; the benchmark runs it
# into its throwaway var directory instead of the checkout's staticfiles/.
STATIC_ROOT = VAR_DIR / "static"
