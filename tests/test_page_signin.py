"""Presenter sign-in in a real browser, on an `--audience` server (`static/js/signin.js`,
`app/web/sessions.py`): an anonymous page gets no admin controls and is offered the sign-in;
the presenter types the admin token, the page reloads with the session cookie, shows every
control and can use them (the cut reaches the server, over HTTP with the cookie and the CSRF
header); signing out takes them away again. Waits are conditions with deadlines."""

from __future__ import annotations

import pytest

from serving import serving

pytestmark = pytest.mark.timeout(180)

DEADLINE_MS = 20_000
ADMIN = "presenter-admin-token-0123456789"


def expect():
    from playwright.sync_api import expect as _expect

    return _expect


@pytest.fixture
def audience_server(tmp_path):
    with serving(tmp_path / "serve.log", "--pops", "lhr,fra,jfk,iad,syd", "--audience", "--admin-token", ADMIN) as srv:
        yield srv


def open_page(browser, srv):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, service_workers="block")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(srv.base_url + "/")
    expect()(page.locator("#conn")).to_have_text("live", timeout=DEADLINE_MS)
    page.errors = errors
    return ctx, page


def test_presenter_signs_in_and_gets_the_controls_anonymous_does_not(browser, audience_server, artifacts):
    srv = audience_server
    ctx, page = open_page(browser, srv)
    anon_ctx, anon = open_page(browser, srv)
    try:
        toolbar = page.locator("#toolbar")
        expect()(page.locator("[data-testid=signin-open]")).to_be_visible(timeout=DEADLINE_MS)
        expect()(toolbar).to_be_hidden()
        expect()(page.locator("[data-testid=crash]")).to_be_hidden()

        page.locator("[data-testid=signin-open]").click()
        page.locator("[data-testid=signin-token]").fill("not-the-token-at-all")
        page.locator("[data-testid=signin-submit]").click()
        expect()(page.locator("[data-testid=signin-error]")).to_have_text("That is not the admin token.",
                                                                          timeout=DEADLINE_MS)
        expect()(toolbar).to_be_hidden()

        page.locator("[data-testid=signin-token]").fill(ADMIN)
        with page.expect_navigation(timeout=DEADLINE_MS):  # the page reloads with the cookie
            page.locator("[data-testid=signin-submit]").click()
        expect()(page.locator("#conn")).to_have_text("live", timeout=DEADLINE_MS)
        expect()(toolbar).to_be_visible(timeout=DEADLINE_MS)
        expect()(page.locator("[data-testid=crash]")).to_be_visible()
        expect()(page.locator("[data-testid=signout]")).to_be_visible()
        expect()(page.locator("[data-testid=signin-open]")).to_be_hidden()
        cookie = [c for c in ctx.cookies() if c["name"] == "edgestate_session"]
        assert cookie and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Strict"
        assert ADMIN not in cookie[0]["value"]
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts on the page cannot read it
        page.screenshot(path=str(artifacts / "presenter-signed-in.png"))

        with page.expect_response(lambda r: r.url.endswith("/api/faults/partition"), timeout=DEADLINE_MS) as cut:
            page.locator("[data-testid=cut-atlantic]").click()  # a control that works, not just shows
        assert cut.value.status == 200 and cut.value.json()["partitioned"] is True
        expect()(page.locator("#partition-banner")).to_be_visible(timeout=DEADLINE_MS)
        page.locator("[data-testid=heal]").click()
        expect()(page.locator("#partition-banner")).to_be_hidden(timeout=DEADLINE_MS)

        # the audience's page, open all along, never got the controls
        expect()(anon.locator("#toolbar")).to_be_hidden()
        expect()(anon.locator("[data-testid=crash]")).to_be_hidden()
        anon.reload()
        expect()(anon.locator("#conn")).to_have_text("live", timeout=DEADLINE_MS)
        expect()(anon.locator("[data-testid=signin-open]")).to_be_visible(timeout=DEADLINE_MS)
        expect()(anon.locator("#toolbar")).to_be_hidden()

        with page.expect_navigation(timeout=DEADLINE_MS):
            page.locator("[data-testid=signout]").click()
        expect()(page.locator("#conn")).to_have_text("live", timeout=DEADLINE_MS)
        expect()(page.locator("[data-testid=signin-open]")).to_be_visible(timeout=DEADLINE_MS)
        expect()(toolbar).to_be_hidden()
        assert not [c for c in ctx.cookies() if c["name"] == "edgestate_session"]
        assert page.errors == [] and anon.errors == []
    finally:
        ctx.close()
        anon_ctx.close()
