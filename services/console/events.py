"""The console publishes no events and consumes none.

It owns no customer data: every page is read from the other services' HTTP APIs with the
signed-in person's own key, and every action is a call to the service that owns it, which
stores it and publishes its event through its own outbox (a complaint opened here is
crm.complaint.opened from the complaints service, a retention action a churn_action interaction
from the profiles service). Its only state, the sessions, is nobody else's business."""

PUBLISHES: tuple[str, ...] = ()
CONSUMES: tuple[str, ...] = ()
