"""All configuration, from CRM_* environment variables (one pydantic-settings class)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = (
    "orders",
    "complaints",
    "loyalty",
    "profiles",
    "scoring",
    "console",
    "engagement",
    "reports",
    "staff",
    "desk",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    mongo_url: str = "mongodb://127.0.0.1:27017"
    # Prefixes keep environments (staging, tests) apart on a shared cluster.
    db_prefix: str = "crm_"
    topic_prefix: str = ""
    topic_partitions: int = Field(12, ge=1, le=1000)
    topic_replication: int = Field(1, ge=1, le=7)

    host: str = "127.0.0.1"
    data_dir: Path = Path(".crm")  # local state of the processes (faust's data directory)
    orders_port: int = 8001
    complaints_port: int = 8002
    loyalty_port: int = 8003
    profiles_port: int = 8004
    scoring_port: int = 8005
    console_port: int = 8000
    engagement_port: int = 8006
    reports_port: int = 8007
    staff_port: int = 8008
    desk_port: int = 8009

    # Where the other services answer, when not on this host's ports (compose, Kubernetes).
    orders_url: str | None = None
    complaints_url: str | None = None
    loyalty_url: str | None = None
    profiles_url: str | None = None
    scoring_url: str | None = None
    console_url: str | None = None
    engagement_url: str | None = None
    reports_url: str | None = None
    staff_url: str | None = None
    desk_url: str | None = None
    peer_timeout_seconds: float = Field(2.0, gt=0)  # calls to other services' APIs (services/common/peers.py)

    api_keys_file: Path = Path(".crm/api-keys.hashed")
    # Keys issued to staff users are checked with the staff service (services/common/auth.py):
    # its answers are kept this long (a revoked key stops working everywhere within it), ...
    auth_cache_seconds: float = Field(5.0, ge=0)
    # ... and while it does not answer, a key it answered for keeps working this long.
    auth_stale_seconds: float = Field(600.0, ge=0)
    auth_timeout_seconds: float = Field(1.0, gt=0)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_import_bytes: int = Field(64 * 1_048_576, ge=1024)
    # Seconds a write's transaction may take (waiting for its turn included) before the
    # request answers 503 with Retry-After (services/common/mongo.py Mongo.transaction).
    db_timeout_seconds: float = Field(10.0, gt=0)
    log_level: str = "info"
    log_json: bool = True

    outbox_poll_seconds: float = Field(1.0, gt=0)
    outbox_batch: int = Field(200, ge=1)  # rows per publish; a row holds up to 100 events
    # One relay per database publishes; another takes over this long after it stops renewing.
    outbox_lease_seconds: float = Field(15.0, gt=0)
    # Published events are kept this long and sent again if the broker comes back without them
    # (the embedded broker keeps its logs in memory: outbox.Retention). 0 keeps none: for a
    # cluster whose logs outlive a broker restart.
    outbox_retention_seconds: float = Field(3600.0, ge=0)
    idempotency_ttl_hours: int = Field(48, ge=1)
    # Times a consumer tries an event its handler fails on before dead-lettering it with the
    # error (not counted while the database is away: kafka.EventConsumer).
    consumer_max_attempts: int = Field(5, ge=1)
    # Tests and rehearsals only: read "now" from this file instead of the wall clock.
    clock_file: Path | None = None
    # Tests only: a named failpoint where the process dies on purpose (see kafka.EventConsumer).
    failpoint: str | None = None

    # complaints
    sla_policy_file: Path | None = None  # TOML; see services/complaints/sla-policy.example.toml
    sla_watch_seconds: float = Field(30.0, gt=0)
    # The case desk's own key (admin: loyalty adjustments need it) for carrying out compensation
    # and sending escalation notices: one caller, so each payment's Idempotency-Key is one scope
    # whoever retries it.
    complaints_api_key: str | None = None

    # scoring
    scoring_batch: int = Field(1000, ge=1)  # events folded per database round trip
    # profiles a worker keeps in memory between batches (facts and what the next fold compares)
    scoring_cache_profiles: int = Field(200_000, ge=0)
    scoring_review_seconds: float = Field(60.0, gt=0)  # how often silent customers are re-scored
    population_seconds: float = Field(60.0, gt=0)  # how often quintiles, ABC and models are refreshed
    # a batch unacknowledged this long means the consumer is stalled: /readyz answers 503
    scoring_stall_seconds: float = Field(120.0, gt=0)
    # auto: event time while the stream is history (a replay), wall time once it is live
    scoring_clock: str = Field("auto", pattern="^(auto|wall|event)$")

    # console (the staff's web pages)
    console_session_minutes: int = Field(480, ge=1)  # idle time after which a person signs in again
    console_cookie_secure: bool = False  # set behind HTTPS: the session cookie is then Secure only
    console_timezone: str = "Asia/Shanghai"  # how times are shown to staff
    console_currency: str = Field("CNY", pattern="^[A-Z]{3}$")  # the currency of profiles' amounts
    # each page's calls to the other services (the 360 view itself waits up to peer_timeout_seconds)
    console_peer_timeout_seconds: float = Field(5.0, gt=0)

    # reports
    reports_refresh_seconds: float = Field(60.0, gt=0)  # how often the reports' snapshot is rebuilt
    # a viewer key the reports service reads the profiles API with (scores, churn worklist)
    reports_api_key: str | None = None

    # staff: a key's last_used_at is written at most this often (each check is a read)
    staff_last_used_seconds: float = Field(60.0, ge=0)
    # desk (notes, tasks, the customer timeline, service reports)
    desk_watch_seconds: float = Field(30.0, gt=0)  # how often due and overdue tasks are looked for
    desk_remind_minutes: int = Field(15, ge=0)  # a task's reminder goes this long before it is due
    desk_churn_task_hours: int = Field(48, ge=1)  # a churn warning's task is due this long after it
    # The desk's own key (agent: engagement's notices need it; the staff directory is read with
    # it) for emailing task reminders: one caller, so each notice's Idempotency-Key is one scope.
    desk_api_key: str | None = None

    # loyalty
    loyalty_programme_file: Path | None = None  # TOML; see services/loyalty/programme.example.toml
    loyalty_expiry_seconds: float = Field(3600.0, gt=0)  # how often expiry and tier reviews run

    # engagement (messages, consent, coupons, campaign reports)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(8025, ge=1, le=65535)
    smtp_tls: str = Field("none", pattern="^(none|starttls|tls)$")
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_timeout_seconds: float = Field(10.0, gt=0)
    mail_from: str = "Shop <news@shop.example>"
    # The embedded stack's local SMTP server keeps what it receives here (services/stack/smtp.py);
    # set, engagement lists it at GET /mailbox.
    mailbox_dir: Path | None = None
    webhook_url: str | None = None  # the SMS and push provider (JSON over HTTPS)
    webhook_secret: str = "change-me"  # HMAC-SHA256 key of the provider webhook's signature
    # Signs unsubscribe links and tracking links; set a long random value in production.
    engagement_secret: str = "change-me-too"
    # Where customers reach engagement's public links (unsubscribe, open pixel, click redirect).
    engagement_public_url: str | None = None
    # The key engagement presents to profiles when a customer unsubscribes (agent role).
    engagement_api_key: str | None = None
    engagement_send_seconds: float = Field(1.0, gt=0)  # how often the sender looks for due messages
    # The first retry's wait after a relay or provider could not take a message; each next one doubles.
    engagement_retry_seconds: float = Field(5.0, gt=0)
    engagement_timezone: str = "Asia/Shanghai"  # customers' time zone for quiet hours when unknown
    engagement_holidays_file: Path | None = None  # TOML; see services/engagement/holidays.example.toml

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def url_of(self, service: str) -> str:
        configured = getattr(self, f"{service}_url")
        return configured.rstrip("/") if configured else f"http://{self.host}:{self.port_of(service)}"

    def db_name(self, service: str) -> str:
        return f"{self.db_prefix}{service}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
