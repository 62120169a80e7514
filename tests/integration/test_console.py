"""The console in a real browser (Debian's Chromium driven by Playwright) in front of the whole
platform on the embedded stack: sign in, search, open a customer, act on a warning, move a
complaint, switch language; every page free of console errors and of serious accessibility
violations (axe-core), a screenshot of each kept under .crm/test-output/console/. Then the
faults: a service down, bad input, an expired session, forged forms, a viewer's limits."""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.clock import to_rfc3339
from services.stack.harness import ROOT, Service, start_console, start_desk
from tests.conftest import NOW
from tests.integration.test_profiles import DIMENSIONS, buy, register, scored, until

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
OUTPUT = ROOT / ".crm" / "test-output" / "console"
HOSTILE = '<img src=x onerror="document.title=1">Mallory'
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def console_clock(tmp_path_factory) -> Path:
    """The console's own clock, so a test can let a session expire."""
    path = tmp_path_factory.mktemp("console-clock") / "now"
    path.write_text(to_rfc3339(NOW))
    return path


@pytest.fixture(scope="module")
def console(stack, platform, console_clock) -> Service:
    platform["desk"] = start_desk(stack, platform)  # the customer page's timeline
    started = start_console(stack, platform, CRM_CLOCK_FILE=str(console_clock))
    yield started
    started.stop()
    platform.pop("desk").stop()


@pytest.fixture(scope="module")
def shop(platform) -> dict[str, Any]:
    """A valuable customer who slipped (a churn warning), one with a hostile name, complaints."""
    profiles, orders, complaints = platform["profiles"], platform["orders"], platform["complaints"]
    slipping = register(profiles, name="钱华", city="上海", city_tier=1, marketing_consent=True)[
        "customer_id"
    ]
    for k in range(8):
        buy(orders, slipping, 80_000, NOW - timedelta(days=300 - 20 * k))
    opened = complaints.post(
        "/complaints", json={"customer_id": slipping, "category": "logistics", "severity": "high"}
    )
    assert opened.status_code == 201, opened.text
    survey = complaints.post(
        "/surveys", json={"customer_id": slipping, "scores": dict.fromkeys(DIMENSIONS, 1), "recommend": 1}
    )
    assert survey.status_code == 201, survey.text
    hostile = register(profiles, name=HOSTILE, city="杭州", city_tier=2)["customer_id"]
    buy(orders, hostile, 12_900, NOW - timedelta(days=5))
    complaints.post(
        "/complaints",
        json={"customer_id": hostile, "category": "product", "severity": "low", "description": HOSTILE},
    )
    scored(profiles, slipping, lambda p: p["churn"]["warning"]["open"])
    scored(profiles, hostile, lambda p: p["purchases"]["count"] == 1)
    (warning,) = until(
        lambda: profiles.get("/churn-warnings", params={"customer_id": slipping}).json()["items"],
        lambda items: len(items) == 1,
    )
    until(lambda: platform["loyalty"].get(f"/accounts/{slipping}").status_code, lambda s: s == 200)
    agent = f"chen.{uuid.uuid4().hex[:6]}"  # an assignee must be a person in the staff directory
    made = platform["staff"].post(
        "/users",
        json={
            "id": agent,
            "name": "陈静",
            "email": f"{agent}@staff.example.com",
            "locale": "zh-CN",
            "roles": ["agent"],
        },
    )
    assert made.status_code == 201, made.text
    return {
        "slipping": slipping,
        "hostile": hostile,
        "complaint": opened.json()["complaint_id"],
        "agent": agent,
        "reasons": warning["reasons"],  # the worklist shows the first three
    }


def worklist_link(shop: dict[str, Any]) -> str:
    return f"td:first-child a[href='/customers/{shop['slipping']}']"


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), (
        "Debian's Chromium is missing: `make test` installs it (tests/browser/install.sh)"
    )
    assert AXE.exists(), "axe-core is missing: `make test` installs it (tests/browser/install.sh)"
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {OUTPUT}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


class Visit:
    """One person's tab: every page it opens is checked for console errors and accessibility, and
    photographed; the time until each page was usable is kept."""

    def __init__(self, browser, base: str) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": 1366, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}
        # Each error with the page it happened on: a late one must not be blamed on the next page.
        self.page.on(
            "console",
            lambda m: (
                self.errors.append(f"{m.text} (from {m.location.get('url') or '?'} on {self.page.url})")
                if m.type == "error"
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"{e} (on {self.page.url})"))

    def open(self, path: str) -> None:
        self.page.goto(self.base + path)

    def check(self, name: str) -> None:
        """Usable (DOMContentLoaded), no console error, no serious axe violation, a screenshot.
        Checked once the page has settled: nothing left loading (the icon comes after `load`)."""
        self.page.wait_for_load_state("networkidle")
        usable = self.page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return n ? n.domContentLoadedEventEnd : 0; }"
        )
        self.timings[name] = usable
        assert not self.errors, f"{name} ({self.page.url}): console errors {self.errors}"
        self.page.add_script_tag(path=str(AXE))
        result = self.page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        serious = [
            f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert not serious, f"{name} ({self.page.url}): serious accessibility violations {serious}"
        self.page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)

    def expected_error(self, text: str) -> None:
        """The one error the step meant to cause; any other stays for the next check."""
        meant = [e for e in self.errors if text in e]
        assert len(meant) == 1, (text, self.errors)
        self.errors.remove(meant[0])

    def close(self) -> None:
        self.context.close()


def sign_in(visit: Visit, key: str, back: str = "/customers") -> None:
    visit.open(back)
    assert "/signin" in visit.page.url
    visit.page.fill("#api_key", key)
    with visit.page.expect_navigation():
        visit.page.get_by_role("button", name=re.compile("Sign in|登录")).click()
    assert visit.page.url.startswith(visit.base + back.split("?")[0]), (
        visit.page.url,
        visit.page.content()[:3000],
    )


def test_an_agent_signs_in_searches_opens_a_customer_acts_and_switches_language(
    console, shop, stack, browser
):
    visit = Visit(browser, console.url)
    visit.open("/signin")
    visit.check("signin-en")
    sign_in(visit, stack.keys["agent"])

    # Search: filters, the hostile name shown as text, the money formatted.
    visit.open("/customers?city=杭州")
    visit.check("customers-en")
    row = visit.page.locator("table.data tbody tr").first
    assert HOSTILE in row.inner_text()  # the markup is shown as text, never run
    assert visit.page.title() != "1"
    assert visit.page.locator("table.data img").count() == 0
    assert "CN¥129.00" in row.inner_text()
    assert visit.page.get_by_text("Export CSV").count() == 0  # an agent does not export

    # The 360 view: every score with its rule and reasons, the warning, loyalty, complaints.
    visit.open(f"/customers/{shop['slipping']}")
    visit.check("customer-en")
    body = visit.page.locator("main").inner_text()
    for part in ("Identity and consent", "Segment", "rule: R", "RFM code", "ABC class", "p_alive", "since"):
        assert part in body, part
    assert "Why this risk" in body and "open_complaint" in body
    assert "钱华" in visit.page.locator("header h1").inner_text()
    # the timeline from the desk service, newest first: the customer's orders are on it
    timeline = visit.page.locator("#h-timeline ~ table tbody").inner_text()
    assert "order placed" in timeline and "did not answer" not in body

    # Act on the warning from the 360 view: a call, recorded with the profiles service.
    warning = visit.page.locator("#h-warnings + table tbody tr").first
    warning.locator("select[name=action]").select_option("call")
    warning.locator("input[name=note]").fill("offered a voucher")
    with visit.page.expect_navigation():
        warning.get_by_role("button", name="Record action").click()
    assert "done=action_recorded" in visit.page.url
    assert "Retention action recorded." in visit.page.locator(".notice").inner_text()
    assert "actioned" in visit.page.locator("#h-warnings + table tbody tr").first.inner_text()

    # Bad input shows the problem next to the field, and what was typed stays. The browser logs
    # the 422 answer as an error: wait for exactly that message (it may come after the page
    # loads) rather than clear the list and have it land on the next page's check.
    visit.page.fill("#r-points", "lots")
    visit.page.fill("#r-reason", "voucher")
    with visit.page.expect_console_message(lambda m: m.type == "error" and "422" in m.text):
        with visit.page.expect_navigation():
            visit.page.get_by_role("button", name="Redeem").click()
    visit.expected_error("status of 422")
    assert visit.page.locator("#err-points").inner_text() == "enter a number"
    assert visit.page.locator("#r-reason").input_value() == "voucher"

    # The worklist, then the complaints queue: move a complaint on from there.
    visit.open("/worklist?status=actioned")
    visit.check("worklist-en")
    row = visit.page.locator("table.data tbody tr", has=visit.page.locator(worklist_link(shop))).first
    assert row.locator(worklist_link(shop)).inner_text() == "钱华"  # by name, to the customer page
    why = row.locator("td.reasons-cell").inner_text()
    assert all(r["text_en"] and r["text_en"] in why for r in shop["reasons"][:3]), why
    assert row.locator("td.reasons-cell code").count() == 0  # the scorer's sentences, not its codes
    visit.open("/complaints")
    visit.check("complaints-en")
    assert "did not answer" not in visit.page.locator("main").inner_text()
    form = visit.page.locator(f"form[action='/complaints/{shop['complaint']}/move']")
    form.locator("select[name=action]").select_option("assign")
    form.locator("input[name=text]").fill(shop["agent"])
    with visit.page.expect_navigation():
        form.get_by_role("button", name="Move").click()
    assert "done=complaint_moved" in visit.page.url
    row = visit.page.locator("tr", has=visit.page.locator(f"a[href='/customers/{shop['slipping']}']")).first
    assert "assigned" in row.inner_text() and shop["agent"] in row.inner_text()
    assert re.search(r"\d+[dhm] \d\d[hms]", row.locator("td.clock").inner_text())  # the SLA clock runs

    visit.open("/dashboard")
    visit.check("dashboard-en")
    assert visit.page.locator("svg.chart").count() >= 7
    assert visit.page.locator("section.chart-card table").count() >= 7  # each chart's numbers
    assert "Figures as of" in visit.page.locator(".freshness").inner_text()  # how old they are

    # Chinese: the choice sticks to the session, dates and money follow the locale.
    with visit.page.expect_navigation():
        visit.page.get_by_role("button", name="中文").click()
    assert "/dashboard" in visit.page.url
    assert visit.page.locator("html").get_attribute("lang") == "zh-CN"
    assert "仪表盘" in visit.page.locator("header h1").inner_text()
    visit.check("dashboard-zh")
    for name, path in (
        ("customers-zh", "/customers"),
        ("worklist-zh", "/worklist?status=all"),
        ("complaints-zh", "/complaints"),
        ("customer-zh", f"/customers/{shop['slipping']}"),
    ):
        visit.open(path)
        visit.check(name)
        if name == "worklist-zh":
            row = visit.page.locator("table.data tbody tr", has=visit.page.locator(worklist_link(shop)))
            why = row.first.locator("td.reasons-cell").inner_text()
            assert all(r["text_zh"] and r["text_zh"] in why for r in shop["reasons"][:3]), why
            assert row.first.locator(worklist_link(shop)).inner_text() == "钱华"
    text = visit.page.locator("main").inner_text()
    assert "身份与授权" in text and "¥6,400.00" in text and "年" in text  # zh money and dates
    assert "not available" not in text.lower() and "暂不可用" not in text

    # Sign out ends the session: the pages ask to sign in again.
    with visit.page.expect_navigation():
        visit.page.get_by_role("button", name="退出").click()
    assert "/signin" in visit.page.url
    visit.check("signin-zh")
    visit.open("/customers")
    assert "/signin" in visit.page.url
    print("time until usable (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in visit.timings.items()))
    visit.close()


def test_the_engagement_page_shows_each_campaign_with_its_measurement_in_both_languages(
    console, shop, stack, platform, browser
):
    engagement = platform["engagement"]
    reached, refused = (
        register(
            platform["profiles"],
            name="孙丽",
            email=f"sun.{k}.{time.time_ns()}@example.com",
            marketing_consent=k == 0,
        )["customer_id"]
        for k in range(2)
    )
    for customer in (reached, refused):
        until(lambda c=customer: engagement.get(f"/contacts/{c}").status_code, lambda s: s == 200)
    created = engagement.post(
        "/campaigns",
        json={
            "name": "Winter sale 冬季促销",
            "kind": "one_off",
            "recipients": [reached, refused],  # the second gave no consent
            "control_share": 0,
            "templates": {"en": {"subject": "Winter sale", "text": "Come and see.\n", "html": "<p>Come</p>"}},
            "default_locale": "en",
        },
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["campaign_id"]
    until(
        lambda: engagement.get(f"/campaigns/{campaign_id}/report").json(),
        lambda r: r["sent"] == 1 and r["delivered"] == 1,
    )

    visit = Visit(browser, console.url)
    sign_in(visit, stack.keys["viewer"], "/engagement")
    visit.check("engagement-en")
    row = visit.page.locator(f"tr[data-campaign='{campaign_id}']")
    cells = [c.inner_text() for c in row.locator("th, td").all()]
    assert cells[:7] == ["Winter sale 冬季促销", "One-off", "active", "2", "1", "1", "0"], cells
    assert cells[8] == "0 of 1 (0.0%)" and cells[9] == "0 of 0 (–)"  # nobody held out
    assert visit.page.get_by_role("link", name="Engagement").get_attribute("aria-current") == "page"
    headers = visit.page.locator("#campaigns thead").inner_text()
    for heading in ("Sent", "Delivered", "Opened", "Clicked", "Converted", "Uplift", "95 % interval"):
        assert heading in headers

    with visit.page.expect_navigation():
        visit.page.get_by_role("button", name="中文").click()
    assert "/engagement" in visit.page.url
    visit.check("engagement-zh")
    assert "营销触达" in visit.page.locator("header h1").inner_text()
    headers = visit.page.locator("#campaigns thead").inner_text()
    for heading in ("已发送", "已送达", "已打开", "已点击", "已转化", "提升", "95% 区间"):
        assert heading in headers
    row = visit.page.locator(f"tr[data-campaign='{campaign_id}']")
    assert "单次" in row.inner_text() and "1 人中 0 人" in row.inner_text()
    visit.close()


def session_of(console: Service, key: str) -> httpx.Client:
    client = httpx.Client(base_url=console.url, timeout=30, follow_redirects=False)
    page = client.get("/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = client.post("/signin", data={"csrf": token, "api_key": key, "next": "/customers"})
    assert answer.status_code == 303, answer.text
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and key not in cookie
    return client


def csrf_of(client: httpx.Client, path: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def test_forms_without_the_sessions_token_are_refused_and_a_viewer_only_reads(console, shop, stack):
    agent = session_of(console, stack.keys["agent"])
    forged = agent.post(f"/customers/{shop['slipping']}/interactions", data={"kind": "message"})
    assert forged.status_code == 403
    wrong = agent.post(
        f"/customers/{shop['slipping']}/interactions", data={"kind": "message", "csrf": "guessed"}
    )
    assert wrong.status_code == 403
    unknown = httpx.post(
        console.url + "/signin", data={"csrf": "x", "api_key": "nope"}, cookies={"crm_console_signin": "x"}
    )
    assert unknown.status_code == 401 and "unknown key" in unknown.text

    viewer = session_of(console, stack.keys["viewer"])
    page = viewer.get(f"/customers/{shop['slipping']}")
    assert page.status_code == 200 and "Record action" not in page.text and "Redeem" not in page.text
    token = csrf_of(viewer, "/customers")
    refused = viewer.post(
        f"/customers/{shop['slipping']}/redemptions", data={"csrf": token, "points": "10", "reason": "x"}
    )
    assert refused.status_code == 403
    admin = session_of(console, stack.keys["admin"])
    listing = admin.get("/customers")
    assert "Export CSV" in listing.text
    export = admin.get("/customers", params={"format": "csv", "city": "上海"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert shop["slipping"] in export.text and export.text.startswith("customer_id,")


def test_a_form_submitted_twice_moves_the_points_once(console, shop, stack, platform):
    """A double click or a browser re-POST sends the same rendered form again: the loyalty
    service applies it once, and the second answer is the same success, not an error."""
    agent = session_of(console, stack.keys["agent"])
    page = agent.get(f"/customers/{shop['slipping']}").text
    form = re.search(r'action="/customers/[^/"]+/redemptions".*?</form>', page, re.S).group(0)
    fields = dict(re.findall(r'name="(csrf|form_token)" value="([^"]+)"', form))
    balance = platform["loyalty"].get(f"/accounts/{shop['slipping']}").json()["balance"]
    assert balance >= 10
    data = {**fields, "points": "10", "reason": "goodwill"}
    first = agent.post(f"/customers/{shop['slipping']}/redemptions", data=data)
    again = agent.post(f"/customers/{shop['slipping']}/redemptions", data=data)
    assert first.status_code == again.status_code == 303, again.text
    assert first.headers["location"] == again.headers["location"]
    assert "done=points_redeemed" in again.headers["location"]
    after = platform["loyalty"].get(f"/accounts/{shop['slipping']}").json()["balance"]
    assert after == balance - 10
    # The page renders a new token for the next redemption: that one is a new write.
    fresh = re.search(
        r'action="/customers/[^/"]+/redemptions".*?name="form_token" value="([^"]+)"',
        agent.get(f"/customers/{shop['slipping']}").text,
        re.S,
    ).group(1)
    assert fresh != fields["form_token"]
    third = agent.post(f"/customers/{shop['slipping']}/redemptions", data={**data, "form_token": fresh})
    assert third.status_code == 303
    assert platform["loyalty"].get(f"/accounts/{shop['slipping']}").json()["balance"] == balance - 20
    tokenless = agent.post(
        f"/customers/{shop['slipping']}/redemptions",
        data={"csrf": fields["csrf"], "points": "10", "reason": "x"},
    )
    assert tokenless.status_code == 403


def test_an_expired_session_sends_the_person_to_sign_in_and_back(console, shop, stack, console_clock):
    client = session_of(console, stack.keys["agent"])
    assert client.get("/worklist?status=all").status_code == 200
    console_clock.write_text(to_rfc3339(NOW + timedelta(hours=9)))  # idle longer than 8 hours
    try:
        time.sleep(0.2)
        answer = client.get("/worklist?status=all")
        assert answer.status_code == 303
        target = answer.headers["location"]
        assert target.startswith("/signin?") and "next=%2Fworklist%3Fstatus%3Dall" in target
        token = re.search(r'name="csrf" value="([^"]+)"', client.get(target).text).group(1)
        again = client.post(
            "/signin", data={"csrf": token, "api_key": stack.keys["agent"], "next": "/worklist?status=all"}
        )
        assert again.headers["location"] == "/worklist?status=all"
    finally:
        console_clock.write_text(to_rfc3339(NOW))


def test_a_service_that_is_down_makes_only_its_part_say_so(stack, platform, shop, console_clock):
    """A console whose complaints service does not answer: the queue and the dashboard's
    complaint charts say so; the customers, segments and the 360 view still work."""
    dead = start_console(
        stack, platform, CRM_COMPLAINTS_URL="http://127.0.0.1:9", CRM_CLOCK_FILE=str(console_clock)
    )
    try:
        client = session_of(dead, stack.keys["agent"])
        queue = client.get("/complaints")
        assert queue.status_code == 200 and "complaints did not answer" in queue.text
        board = client.get("/dashboard")
        assert board.status_code == 200
        assert board.text.count("complaints did not answer") == 2  # NPS and SLA parts
        assert "Customers and revenue by segment" in board.text and "<svg" in board.text
        assert client.get(f"/customers/{shop['slipping']}").status_code == 200
        away = start_console(
            stack, platform, CRM_DESK_URL="http://127.0.0.1:9", CRM_CLOCK_FILE=str(console_clock)
        )
        try:  # the desk away: only the timeline says so
            page = session_of(away, stack.keys["agent"]).get(f"/customers/{shop['slipping']}")
            assert page.status_code == 200 and page.text.count("did not answer") == 1
            assert "desk did not answer" in page.text and "Identity and consent" in page.text
        finally:
            away.stop()
    finally:
        dead.stop()


def test_an_admin_reads_the_staff_directory_issues_a_key_and_revokes_it(console, stack, platform, browser):
    staff = platform["staff"]
    login = f"sup.{uuid.uuid4().hex[:8]}"
    assert (
        staff.post(
            "/users",
            json={
                "id": login,
                "name": "王芳",
                "email": f"{login}@shop.example",
                "roles": ["agent", "supervisor"],
            },
        ).status_code
        == 201
    )
    team = f"t-{uuid.uuid4().hex[:8]}"
    assert (
        staff.post("/teams", json={"id": team, "name": "华东客服组", "supervisors": [login]}).status_code
        == 201
    )

    visit = Visit(browser, console.url)
    sign_in(visit, stack.keys["admin"], "/staff")
    assert "华东客服组" in visit.page.locator("main").inner_text()
    visit.check("staff-en")
    visit.open(f"/staff/{login}")
    visit.page.fill("#k-label", "front desk")
    with visit.page.expect_navigation():
        visit.page.get_by_role("button", name="Issue").click()
    key = visit.page.locator("code.secret").inner_text()
    assert key.startswith("crm_user_")
    visit.check("staff-member-en")
    with visit.page.expect_navigation():
        visit.page.get_by_role("button", name="Revoke front desk").click()
    assert "Key revoked." in visit.page.locator(".notice").inner_text()
    assert visit.page.locator("code.secret").count() == 0  # shown once only
    with visit.page.expect_navigation():
        visit.page.get_by_role("button", name="中文").click()
    assert "已吊销" in visit.page.locator("main").inner_text()
    visit.check("staff-member-zh")
    visit.open("/staff")
    assert "主管" in visit.page.locator("main").inner_text()
    visit.check("staff-zh")
    visit.close()
