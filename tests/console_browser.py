"""The console in headless Chromium, driven by Playwright: the scenarios a person follows,
a full-page screenshot of each, and axe-core's accessibility check on every page.

Run by tests/console_browser.rs, which starts Herald and passes, in the environment:
HERALD_URL, HERALD_KEY (admin), HERALD_READ_KEY, HERALD_AXE (axe.min.js), HERALD_CHROMIUM,
HERALD_SCREENSHOTS (a folder). Exits non-zero, saying what failed, on the first failure.
"""

import json
import os
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

from playwright.sync_api import sync_playwright

URL = os.environ["HERALD_URL"]
KEY = os.environ["HERALD_KEY"]
READ_KEY = os.environ["HERALD_READ_KEY"]
AXE = open(os.environ["HERALD_AXE"], encoding="utf-8").read()
SHOTS = os.environ["HERALD_SCREENSHOTS"]
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
checked_pages = []


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method, headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def check(page, name):
    """A full-page screenshot, and no serious or critical axe-core violation."""
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)
    page.evaluate(AXE + "\n;0")
    violations = page.evaluate("""async () => (await axe.run(document)).violations
        .filter(v => v.impact === 'serious' || v.impact === 'critical')
        .map(v => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map(n => n.target).join(' ')}`)""")
    assert not violations, f"{name}: accessibility violations: {violations}"
    checked_pages.append(name)


def sign_in(page, key):
    page.goto(URL + "/console")
    assert page.url.endswith("/console/sign-in"), page.url
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(URL + "/console")


def scenario_sign_in_and_overview(page):
    page.goto(URL + "/console")
    assert page.url.endswith("/console/sign-in"), f"not redirected: {page.url}"
    check(page, "01-sign-in")
    sign_in(page, KEY)
    for text in ["Lanes", "Gateways", "P0", "P4", "sandbox"]:
        assert page.get_by_text(text).first.is_visible(), f"overview lacks {text}"
    check(page, "02-overview")
    # Times are shown in the viewer's zone (this context is in New York), with UTC on hover.
    counted = page.locator("#live .hint time").first
    assert counted.get_attribute("title").endswith(" UTC"), counted.get_attribute("title")
    assert not counted.inner_text().endswith("UTC"), f"not local: {counted.inner_text()}"
    assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == "America/New_York"
    # The overview refreshes itself (the one script, under a CSP without inline script).
    stamp = page.locator("#live .hint").first.inner_text()
    page.wait_for_function(
        "s => document.querySelector('#live .hint').innerText !== s", arg=stamp, timeout=10000)


def scenario_message_reaches_delivered(page):
    sent = api("POST", "/v1/messages", {"channel": "email", "priority": "P1",
                                         "to": "browser@example.com", "subject": "From the browser test",
                                         "body": "Hello"})
    page.goto(URL + "/console/messages")
    page.get_by_label("To").fill("browser@example.com")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/console/messages?**")
    link = page.locator(f"a[href='/console/messages/{sent['id']}']")
    assert link.count() == 1, "the search lists the message"
    check(page, "03-search")
    link.click()
    deadline = time.time() + 15
    while "delivered" not in page.locator(".facts").inner_text():
        assert time.time() < deadline, "the message page never showed delivered"
        time.sleep(0.3)
        page.reload()
    assert page.get_by_role("cell", name="delivered").count() >= 1, "the timeline has delivered"
    check(page, "04-message-delivered")
    # The overview's chart and the P1 lane count the send.
    page.goto(URL + "/console")
    caption = page.locator("#live figcaption")
    assert not caption.inner_text().startswith("0 sent"), caption.inner_text()
    check(page, "04b-overview-after-a-send")
    page.goto(URL + "/console/messages")
    page.get_by_label("Status").select_option("delivered")
    page.get_by_role("button", name="Search").click()
    assert page.locator(f"a[href='/console/messages/{sent['id']}']").count() == 1


def scenario_bulk_progress(page):
    reply = api("POST", "/v1/messages/bulk", {"channel": "email", "priority": "P3", "subject": "News",
                                               "body": "Hello", "recipients": [
                                                   {"to": f"bulk{i}@example.com"} for i in range(25)]})
    deadline = time.time() + 15
    while True:
        page.goto(URL + "/console/bulk")
        if "25 of 25 finished" in page.locator("main").inner_text():
            break
        assert time.time() < deadline, "the bulk send never finished on its list"
        time.sleep(0.3)
    check(page, "08b-bulk-sends")
    page.get_by_role("link", name=reply["bulk_id"]).first.click()
    page.wait_for_url(f"**/console/bulk/{reply['bulk_id']}")
    assert "25 of 25 recipients finished" in page.locator("main").inner_text()
    check(page, "08c-bulk-send")


def scenario_cancel_a_scheduled_message(page):
    later = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    queued = api("POST", "/v1/messages", {"channel": "email", "priority": "P2", "to": "later@example.com",
                                           "subject": "Later", "body": "b", "send_at": later})
    page.goto(f"{URL}/console/messages/{queued['id']}")
    with page.expect_navigation():
        page.get_by_role("button", name="Cancel this message").click()
    assert "cancelled" in page.locator(".facts").inner_text()
    assert api("GET", f"/v1/messages/{queued['id']}")["status"] == "cancelled"
    check(page, "05-cancelled")


def scenario_a_reader_cannot_act(browser):
    context = browser.new_context()
    page = context.new_page()
    later = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    queued = api("POST", "/v1/messages", {"channel": "email", "priority": "P2", "to": "read@example.com",
                                           "subject": "Later", "body": "b", "send_at": later})
    sign_in(page, READ_KEY)
    page.goto(f"{URL}/console/messages/{queued['id']}")
    assert page.get_by_role("button", name="Cancel this message").count() == 0
    check(page, "06-reader")
    context.close()


def scenario_add_and_remove_a_suppression(page):
    page.goto(URL + "/console/suppressions")
    form = page.locator("form[action='/console/suppressions/add']")
    form.get_by_label("Channel").select_option("email")
    form.get_by_label("Address").fill("Optout@Example.com")
    form.get_by_label("Reason").select_option("unsubscribe")
    with page.expect_navigation():
        form.get_by_role("button", name="Add").click()
    assert page.get_by_role("cell", name="optout@example.com", exact=True).count() == 1, \
        f"the entry is not listed: {page.url} {page.locator('main').inner_text()[-700:]}"
    check(page, "08-suppression-added")
    with page.expect_navigation():
        page.get_by_role("button", name="Remove optout@example.com").click()
    assert page.get_by_role("cell", name="optout@example.com", exact=True).count() == 0, "the entry is gone"


def scenario_import_a_csv_with_a_bad_line(page):
    page.goto(URL + "/console/suppressions")
    page.get_by_label("CSV with a header row").fill("channel,address\nemail,imported@example.com\nemail,not an address\n")
    with page.expect_navigation():
        page.get_by_role("button", name="Import").click()
    report = page.locator("main").inner_text()
    assert "1 new entry imported" in report and "1 line refused" in report, report
    assert page.get_by_role("cell", name="3", exact=True).count() == 1, "the bad line is named"
    check(page, "12-import-report")


def scenario_redrive_a_dead_letter(page):
    failed = api("POST", "/v1/messages", {"channel": "sms", "priority": "P4", "to": "+15005550001", "body": "x"})
    deadline = time.time() + 10
    while api("GET", f"/v1/messages/{failed['id']}")["status"] != "failed":
        assert time.time() < deadline, "the message never failed"
        time.sleep(0.1)
    page.goto(URL + "/console/dead-letters")
    page.locator(f"#pick-{failed['id']}").check()
    check(page, "09-dead-letters")
    with page.expect_navigation():
        page.get_by_role("button", name="Redrive selected").click()
    deadline = time.time() + 10
    while len(api("GET", f"/v1/messages/{failed['id']}")["events"]) < 6:
        assert time.time() < deadline, "the dead letter was not redriven"
        time.sleep(0.1)


def scenario_edit_a_template(page):
    page.goto(URL + "/console/templates")
    page.get_by_label("Template name").fill("receipt")
    with page.expect_navigation():
        page.get_by_role("button", name="Open or create").click()
    page.get_by_label("Subject").fill("Receipt for {{ name }}")
    page.get_by_label("Sample data (JSON)").fill('{"name": "Ann"}')
    # The preview follows the typing (the script), with no click.
    page.wait_for_function(
        "() => document.querySelector('#preview').innerText.includes('Receipt for Ann')", timeout=5000)
    check(page, "10-template-preview")
    with page.expect_navigation():
        page.get_by_role("button", name="Save").click()
    assert api("GET", "/v1/templates/receipt")["subject"] == "Receipt for {{ name }}"
    page.goto(URL + "/console/templates")
    assert page.get_by_role("link", name="receipt").count() == 1
    check(page, "11-templates")


def scenario_read_the_audit_log(page):
    page.goto(URL + "/console/audit")
    page.get_by_label("Action").select_option("template.put")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    assert page.get_by_role("cell", name="receipt", exact=True).count() == 1, "the template's save is logged"
    check(page, "13-audit")


def scenario_simulate_a_route(page):
    api("POST", "/v1/numbers", {"number": "+15005550100", "role": "front_desk", "provider": "sandbox"})
    page.goto(URL + "/console/numbers")
    page.get_by_label("From").fill("+15005550199")
    page.get_by_label("Text").fill("STOP")
    with page.expect_navigation():
        page.get_by_role("button", name="Simulate").click()
    assert page.get_by_role("heading", name="Decision: opt_out").count() == 1, page.locator("main").inner_text()
    check(page, "14-routing-simulator")
    page.goto(URL + "/console/webhooks")
    check(page, "15-webhooks")


def scenario_read_a_thread(page):
    api("POST", "/v1/contacts", {"name": "Bea", "identities": [{"kind": "email", "value": "bea@example.com"}]})
    api("POST", "/v1/messages", {"channel": "email", "priority": "P1", "to": "bea@example.com",
                                 "subject": "Hi", "body": "See you at five"})
    page.goto(URL + "/console/threads")
    check(page, "16-inbox")
    with page.expect_navigation():
        page.get_by_role("link", name="Bea").click()
    assert "See you at five" in page.locator(".timeline").inner_text()
    page.get_by_label("Subject (email)").fill("Re: five")
    page.get_by_label("Message").fill("Running five minutes late")
    with page.expect_navigation():
        page.get_by_role("button", name="Send reply").click()
    assert "Running five minutes late" in page.locator(".timeline").inner_text(), page.locator("main").inner_text()[:1500]
    check(page, "17-thread")


def scenario_keyboard_only(browser):
    """Signs in and moves through the console with the keyboard alone, each focus visible."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(URL + "/console/sign-in")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(10):
        if page.evaluate("document.activeElement.id") == "key":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "key", "Tab reaches the key field"
    page.keyboard.type(KEY)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == URL + "/console", page.url
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")  # the first menu entry
    focused = page.evaluate("""() => { const e = document.activeElement, s = getComputedStyle(e);
        return [e.textContent, s.outlineStyle, s.outlineWidth]; }""")
    assert focused[0] == "Overview" and focused[1] != "none" and focused[2] != "0px", focused
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == URL + "/console/messages", page.url
    context.close()


def scenario_a_phone(browser):
    """At 390 px wide no page is wider than the screen: wide tables scroll inside it."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    sign_in(page, KEY)
    for path, shot in [("/console", "20-phone-overview"), ("/console/messages", "21-phone-messages"),
                       ("/console/suppressions", "22-phone-suppressions"),
                       ("/console/dead-letters", "23-phone-dead-letters")]:
        page.goto(URL + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a 390 px phone"
        check(page, shot)
    context.close()


def scenario_sign_out(page):
    page.goto(URL + "/console")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(URL + "/console/sign-in")
    page.goto(URL + "/console")
    assert page.url.endswith("/console/sign-in"), "signed out"
    check(page, "07-signed-out")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ["HERALD_CHROMIUM"], args=CHROMIUM_FLAGS)
        context = browser.new_context(timezone_id="America/New_York")
        page = context.new_page()
        blocked = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        scenario_sign_in_and_overview(page)
        scenario_message_reaches_delivered(page)
        scenario_cancel_a_scheduled_message(page)
        scenario_bulk_progress(page)
        scenario_a_reader_cannot_act(browser)
        scenario_keyboard_only(browser)
        scenario_a_phone(browser)
        scenario_add_and_remove_a_suppression(page)
        scenario_import_a_csv_with_a_bad_line(page)
        scenario_redrive_a_dead_letter(page)
        scenario_edit_a_template(page)
        scenario_read_the_audit_log(page)
        scenario_simulate_a_route(page)
        scenario_read_a_thread(page)
        scenario_sign_out(page)
        assert not blocked, f"the pages broke their own CSP: {blocked}"
        browser.close()
    print(f"console in Chromium: {len(checked_pages)} pages checked, screenshots in {SHOTS}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"console browser test failed: {e}", file=sys.stderr)
        sys.exit(1)
