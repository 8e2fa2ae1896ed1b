"""CivicDesk settings: one module, read from the environment.

With no environment at all the project runs embedded: SQLite, console email, media on
local disk and a filesystem Celery broker. Each service switches to production by its
variable (DATABASE_URL, REDIS_URL, EMAIL_BACKEND/ANYMAIL_*). With DEBUG off, secrets
that have no safe default must be given or start-up fails.
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("CIVICDESK_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # real environment variables win over .env

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-only-for-debug"

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Absolute links in emails need to know where the portal lives.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
CITY_NAME = env.str("CITY_NAME", default="Demo City")

INSTALLED_APPS = [
    # Django's admin with "view on site" scoped like the object (and no autodiscovery).
    "requests_app.admin_site.CivicDeskAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "leaflet",
    "anymail",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "requests_app",
    "routing",
    "notifications",
    "surveys",
]

MIDDLEWARE = [
    # First, so that every log line of the request, redirects included, carries its id.
    "requests_app.middleware.RequestIdMiddleware",
    "requests_app.middleware.AccessLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response (see "Content Security Policy" below).
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "requests_app.middleware.StaffTwoFactorMiddleware",
    "requests_app.middleware.PrivateResponseMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: it turns the lockout flag set during authentication into the 429 response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "civicdesk.urls"
WSGI_APPLICATION = "civicdesk.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "requests_app.context_processors.portal",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'civicdesk.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The worker and web server are separate processes: tests that start a worker need a
    # file, not the in-memory default, and WAL lets readers and one writer coexist.
    # One file per test run, so that two runs in one checkout do not share a database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # An unreachable server must fail a request (and /health/) in seconds, not after the
    # operating system's TCP timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    # The pages every visitor loads run compiled queries (requests_app/compiled.py), which
    # PostgreSQL keeps prepared after this many runs on a connection. Leave it empty for a
    # pooler in transaction mode that cannot keep prepared statements (PgBouncer < 1.21).
    prepare_threshold = env.str("DATABASE_PREPARE_THRESHOLD", default="5").strip()
    DATABASES["default"]["OPTIONS"].setdefault(
        "prepare_threshold", int(prepare_threshold) if prepare_threshold else None
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Staff sign-in ----------------------------------------------------------------------
# Only staff have accounts (residents sign in with emailed links), so the minimum applies
# to staff.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # Refuses a locked-out username and address before the password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "admin:login"
# django-axes: after AXES_FAILURE_LIMIT wrong passwords for one username from one address,
# that pair is refused (HTTP 429) for AXES_COOLOFF_MINUTES. Attempts are counted in the
# database, so every gunicorn worker sees them. `manage.py axes_reset` unlocks everyone.
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Sign-ins, failures and lockouts are logged by requests_app.staff_auth, with the address.
AXES_VERBOSE = False
# The same client address as the intake throttle (honours USE_X_FORWARDED_FOR).
AXES_CLIENT_IP_CALLABLE = "requests_app.staff_auth.client_ip"
# Two-factor sign-in (django-otp, TOTP): staff with a confirmed authenticator device must
# give its code at the admin login; with REQUIRE_STAFF_2FA, staff without one cannot sign in.
REQUIRE_STAFF_2FA = env.bool("REQUIRE_STAFF_2FA", default=False)
OTP_TOTP_ISSUER = f"CivicDesk {CITY_NAME}"
# Enrolment is an administrator adding a device and showing its QR code in the admin, so the
# QR code must stay viewable (by those with the TOTP device permissions: superusers).
OTP_ADMIN_HIDE_SENSITIVE_DATA = False

# --- Language and time ------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("es", _("Spanish"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="America/New_York")
USE_I18N = True
USE_TZ = True

# --- Static and media -------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Photos and exports go to an S3-compatible bucket (AWS, MinIO, Ceph, …) when one is named,
# to MEDIA_ROOT otherwise.
MEDIA_S3_BUCKET = env.str("AWS_STORAGE_BUCKET_NAME", default="") or env.str(
    "MEDIA_S3_BUCKET", default=""
)
STORAGES = {
    "default": (
        {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": MEDIA_S3_BUCKET,
                "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
                "region_name": env.str("AWS_S3_REGION_NAME", default="") or None,
                # Without keys boto3 finds its own (instance role, ~/.aws, AWS_* variables).
                "access_key": env.str("AWS_S3_ACCESS_KEY_ID", default="")
                or env.str("AWS_ACCESS_KEY_ID", default="")
                or None,
                "secret_key": env.str("AWS_S3_SECRET_ACCESS_KEY", default="")
                or env.str("AWS_SECRET_ACCESS_KEY", default="")
                or None,
                "location": env.str("AWS_LOCATION", default=""),
                # Photos are served through a view that checks who may see them: keep the
                # bucket private; any URL to an object is signed and expires.
                "default_acl": env.str("AWS_DEFAULT_ACL", default="") or None,
                "querystring_auth": True,
                # Two uploads with one name must not replace each other's photo.
                "file_overwrite": False,
            },
        }
        if MEDIA_S3_BUCKET
        else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    ),
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Photos arrive as multipart uploads; the form enforces its own per-file limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Email ------------------------------------------------------------------------------
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default=f"{CITY_NAME} 311 <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
if EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend":
    vars().update(env.email_url("EMAIL_URL", default="smtp://localhost:25"))
# anymail reads its ESP credentials (e.g. ANYMAIL_MAILGUN_API_KEY) from its own settings.
ANYMAIL = {
    key.removeprefix("ANYMAIL_"): value
    for key, value in env.ENVIRON.items()
    if key.startswith("ANYMAIL_")
}

# --- Celery -----------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# The filesystem transport has no host; naming the one kombu would assume anyway spares
# a warning on every connection.
CELERY_BROKER_URL = REDIS_URL or "filesystem://localhost/"
if REDIS_URL:
    # Enqueueing happens after a request is committed; a slow or frozen Redis must not
    # hold up the resident, so fail fast and let the periodic sweep pick the work up.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A frozen Redis accepts connections and never answers: bound each publish tightly,
        # since a submission must answer in seconds whatever the broker does.
        "socket_timeout": 0.5,
        "socket_connect_timeout": 0.5,
        "max_retries": 0,  # a publish that cannot connect fails at once
        "visibility_timeout": 600,
    }
else:
    _broker_dir = Path(
        env.str("CELERY_FILESYSTEM_BROKER_DIR", default=str(VAR_DIR / "celery-broker"))
    )
    _broker_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.2,  # a folder cannot notify; poll often enough to feel instant
    }
CELERY_TASK_IGNORE_RESULT = True
# Email has a queue of its own, so that a slow or failing provider never delays routing and
# the SLA sweep. A worker started without -Q consumes both; to scale out, start workers
# with -Q celery and -Q email.
CELERY_TASK_QUEUES = [Queue("celery", routing_key="celery"), Queue("email", routing_key="email")]
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {"notifications.tasks.*": {"queue": "email"}}
CELERY_IMPORTS = ["requests_app.export_tasks"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Worker processes are replaced after this many tasks, so their memory stays flat over
# weeks whatever a library caches or fragments (0: never).
CELERY_WORKER_MAX_TASKS_PER_CHILD = (
    env.int("CELERY_WORKER_MAX_TASKS_PER_CHILD", default=1000) or None
)
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = TIME_ZONE
# How long after intake the sweep treats unfinished work as lost in transit.
INTAKE_SWEEP_GRACE_SECONDS = env.int("INTAKE_SWEEP_GRACE_SECONDS", default=60)

# --- Caches -----------------------------------------------------------------------------
# "default" stays per process. "shared" is seen by every web and worker process (Redis, or
# a folder under var/ when embedded): the worker's heartbeat for /health/ lives there.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "civicdesk",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    ),
}

# --- Health and retention ---------------------------------------------------------------
# /health/ answers 503 when the worker's heartbeat (stamped every 30 s) is older than this.
HEALTH_WORKER_STALE_SECONDS = env.int("HEALTH_WORKER_STALE_SECONDS", default=180)
# …and reports emails still pending after this many minutes as a backlog.
HEALTH_OUTBOX_BACKLOG_MINUTES = env.int("HEALTH_OUTBOX_BACKLOG_MINUTES", default=10)
# Reporter name, email and phone (and followers' addresses) of requests completed or closed
# this many days ago are anonymised by a daily task; 0 keeps them for ever.
RETENTION_REPORTER_CONTACT_DAYS = env.int("RETENTION_REPORTER_CONTACT_DAYS", default=365)

# --- The portal -------------------------------------------------------------------------
# Service area as "min_lng,min_lat,max_lng,max_lat", or a GeoJSON (Multi)Polygon file.
SERVICE_AREA_BBOX = env.list(
    "SERVICE_AREA_BBOX", cast=float, default=[-71.19, 42.23, -70.99, 42.40]
)
SERVICE_AREA_GEOJSON = env.str("SERVICE_AREA_GEOJSON", default="")
PHOTO_MAX_BYTES = env.int("PHOTO_MAX_BYTES", default=10 * 1024 * 1024)
PHOTO_MAX_PIXELS = env.int("PHOTO_MAX_PIXELS", default=40_000_000)
PHOTO_MAX_EDGE = 2048
PHOTO_THUMB_EDGE = 400
PHOTOS_PER_REPORT = 5
REPORTS_PER_IP_PER_HOUR = env.int("REPORTS_PER_IP_PER_HOUR", default=10)
# Surveys: sent this long after completion, links valid this long, never for old requests.
SURVEY_DELAY_HOURS = env.int("SURVEY_DELAY_HOURS", default=48)
SURVEY_LINK_MAX_AGE_DAYS = env.int("SURVEY_LINK_MAX_AGE_DAYS", default=30)
SURVEY_MAX_AGE_DAYS = env.int("SURVEY_MAX_AGE_DAYS", default=14)
# Email intake: new emails land in this category's triage queue; replies go to this address.
INBOUND_EMAIL_CATEGORY = env.str("INBOUND_EMAIL_CATEGORY", default="email")
INBOUND_EMAIL_ADDRESS = env.str("INBOUND_EMAIL_ADDRESS", default="")
# The public transparency page hides figures based on fewer requests than this.
TRANSPARENCY_MIN_CELL = env.int("TRANSPARENCY_MIN_CELL", default=5)
# Behind a reverse proxy, the client address is in X-Forwarded-For.
USE_X_FORWARDED_FOR = env.bool("USE_X_FORWARDED_FOR", default=False)
# A Nominatim-compatible search URL, asked in the background when the gazetteer has no match.
GEOCODER_URL = env.str("GEOCODER_URL", default="")

# What the public sees (requests_app/moderation.py). Unset: the built-in word list;
# "none": no list. Words ending in * match as stems.
MODERATION_BLOCKED_WORDS = env.list("MODERATION_BLOCKED_WORDS", default=None)
# Residents' photos wait for staff before the public sees them (staff see them at once).
MODERATION_HOLD_PHOTOS_FROM_UNVERIFIED = env.bool(
    "MODERATION_HOLD_PHOTOS_FROM_UNVERIFIED", default=False
)
WITHDRAW_LINK_MAX_AGE_DAYS = env.int("WITHDRAW_LINK_MAX_AGE_DAYS", default=90)

LEAFLET_CONFIG = {
    "DEFAULT_CENTER": (
        (SERVICE_AREA_BBOX[1] + SERVICE_AREA_BBOX[3]) / 2,
        (SERVICE_AREA_BBOX[0] + SERVICE_AREA_BBOX[2]) / 2,
    ),
    "DEFAULT_ZOOM": 13,
    "MIN_ZOOM": 3,
    "MAX_ZOOM": 19,
    "TILES": [
        (
            "Map",
            env.str("MAP_TILES_URL", default="https://tile.openstreetmap.org/{z}/{x}/{y}.png"),
            {
                "attribution": env.str("MAP_ATTRIBUTION", default="© OpenStreetMap contributors"),
                "maxZoom": 19,
            },
        )
    ],
    "ATTRIBUTION_PREFIX": "Leaflet",
    "RESET_VIEW": False,
}

# --- Production hardening ---------------------------------------------------------------
# TLS ends at the reverse proxy, which must set X-Forwarded-Proto (and overwrite any the
# client sent). `manage.py check --deploy` is clean with these defaults.
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Load balancers and container health checks probe over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^health/$"]
    SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is all but irreversible and binds every subdomain of the city's domain,
        # so it is the city's decision (SECURE_HSTS_PRELOAD=1), not a default.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_HTTPONLY = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- Content Security Policy ------------------------------------------------------------
# django-csp sends it on every response. Scripts come from our own static files; the one
# inline script left, django-leaflet's map loader, carries the request's nonce
# ({% leaflet_map … csp_nonce=request.csp_nonce %}). Page data travels in json_script
# blocks (<script type="application/json">), which never run and need no nonce.
# tests/test_csp.py checks every kind of page against this, in Chromium too.


def _tile_sources(leaflet_config):
    """The hosts Leaflet loads tiles from, as CSP sources ("{s}.example.org" → "*.example.org")."""
    sources = set()
    for _label, url, _options in [*leaflet_config["TILES"], *leaflet_config.get("OVERLAYS", [])]:
        parts = urlsplit(url)
        if not parts.netloc:
            continue  # a path on this site: already 'self'
        labels = parts.netloc.split(".")
        if "{" in labels[0]:
            labels[0] = "*"
        if "{" in ".".join(labels):
            raise ImproperlyConfigured(
                f"Tile URL {url!r}: a placeholder in the host can only be its first label."
            )
        sources.add(f"{parts.scheme}://{'.'.join(labels)}" if parts.scheme else ".".join(labels))
    return sorted(sources)


CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        # Deny by default; every kind of content the pages use is named below.
        "default-src": [NONE],
        "script-src": [SELF, NONCE],
        # Style sheets only from our static files: no <style> elements. Style *attributes*
        # are allowed because the staff admin and crew pages render some (colour of SLA
        # badges and moderation flags, photo sizes in requests_app/admin*.py and
        # sla_tags.py); an attribute cannot select other elements, so it cannot read the
        # page the way an injected style sheet can, and img-src bounds where it may load
        # from. Browsers without CSP3 fall back to style-src and drop those colours only.
        "style-src": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        # data: for the images in Leaflet's and the admin's style sheets.
        "img-src": [SELF, "data:", *_tile_sources(LEAFLET_CONFIG)],
        "font-src": [SELF],
        "connect-src": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "object-src": [NONE],
        # Browsers post what the policy blocked here, and it is logged (requests_app/csp_report.py).
        "report-uri": ["/csp-report/"],
    },
}

# --- Logging ----------------------------------------------------------------------------
# One JSON object per line in production (LOG_FORMAT=json, the default with DEBUG off), plain
# text in development; every line carries the request id (see requests_app/middleware.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or text.")
# A line per request from Django itself (gunicorn's access log cannot write JSON safely).
ACCESS_LOG = env.bool("ACCESS_LOG", default=not DEBUG)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "requests_app.middleware.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
