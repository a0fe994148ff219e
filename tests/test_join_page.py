"""`/join` on a phone and the big screen, in a real browser against `edgestate serve --audience`.

- At 390x844 the page has no sideways scroll; tapping +1 writes (the counter read over the API
  goes up) and the journey shows "answered by <city>"; the big screen (the dashboard in a second
  page) shows the hall's total, which follows the tap.
- The QR code on the presenter's page, as the browser draws it, decodes (zxing-cpp) to the join
  URL the overlay shows, which is this server's `/join`.
- A word with HTML in it is shown as text, on the phone and nowhere run as markup.

Screenshots of both go to the test artifacts. Waits are conditions with deadlines.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from serving import serving

pytestmark = pytest.mark.timeout(240)

DEADLINE_MS = 20_000


def expect():
    from playwright.sync_api import expect as _expect

    return _expect


@pytest.fixture(scope="module")
def audience_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("join") / "serve.log"
    with serving(log, "--pops", "default", "--speed", "5", "--audience") as srv:
        yield srv


@pytest.fixture
def open_page(browser, audience_server):
    contexts = []

    def make(path: str, width: int, height: int, **ctx_options):
        ctx = browser.new_context(viewport={"width": width, "height": height}, service_workers="block", **ctx_options)
        contexts.append(ctx)
        page = ctx.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("dialog", lambda d: page.errors.append("dialog: " + d.message))  # an alert() would be injection
        page.goto(audience_server.base_url + path)
        return page

    yield make
    for ctx in contexts:
        ctx.close()


def votes(server) -> int:
    """The counter's value at every POP that has it: the highest (it only goes up here)."""
    ids = [r["id"] for r in httpx.get(server.base_url + "/api/replicas", timeout=10).json()["replicas"]]
    return max(httpx.get(f"{server.base_url}/api/replicas/{i}/counters/votes", timeout=10).json()["value"]
               for i in ids[:3])


def test_join_on_a_phone_writes_and_the_big_screen_follows(open_page, audience_server, artifacts):
    screen = open_page("/", 1440, 900)
    total = screen.locator("[data-testid=audience-total]")
    expect()(total).to_be_visible(timeout=DEADLINE_MS)

    phone = open_page("/join", 390, 844, is_mobile=True, has_touch=True, timezone_id="Europe/Berlin")
    expect()(phone.locator("[data-testid=join-pop]")).to_have_value("fra", timeout=DEADLINE_MS)
    width = phone.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"sideways scroll on a phone: scrollWidth {width[0]} > innerWidth {width[1]}"

    before = votes(audience_server)
    phone.locator("[data-testid=join-vote]").tap()
    journey = phone.locator("[data-testid=join-journeys] li").first
    expect()(journey).to_contain_text("answered by Frankfurt in", timeout=DEADLINE_MS)
    expect()(journey).to_contain_text("everywhere in", timeout=DEADLINE_MS)
    after = votes(audience_server)
    assert after == before + 1, (before, after)
    expect()(phone.locator("[data-testid=join-votes]")).to_have_text(str(after), timeout=DEADLINE_MS)
    expect()(total).to_have_text(str(after), timeout=DEADLINE_MS)

    # a word with markup in it: shown as the text it is, and no element made from it
    word = "<img src=x onerror=alert(1)>"[:24]
    phone.locator("[data-testid=join-word]").fill(word)
    phone.locator("[data-testid=join-send]").tap()
    expect()(phone.locator("[data-testid=join-words] li").first).to_have_text(word, timeout=DEADLINE_MS)
    assert phone.locator("[data-testid=join-words] img").count() == 0
    width = phone.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"sideways scroll after the taps: {width}"
    phone.screenshot(path=str(artifacts / "join-phone-390x844.png"), full_page=True)
    screen.screenshot(path=str(artifacts / "join-big-screen.png"))
    assert not phone.errors and not screen.errors, (phone.errors, screen.errors)


def test_the_qr_code_on_the_presenters_page_decodes_to_the_join_url(open_page, audience_server):
    import zxingcpp

    screen = open_page("/", 1440, 900)
    qr = screen.locator("[data-testid=audience-qr]")
    expect()(qr).to_be_visible(timeout=DEADLINE_MS)
    screen.wait_for_function("() => { const i = document.querySelector('[data-testid=audience-qr]');"
                             " return i && i.complete && i.naturalWidth > 0; }", timeout=DEADLINE_MS)
    # the pixels as the browser drew them (grey), decoded by a real QR reader
    w, h, grey = screen.evaluate("""() => {
        const img = document.querySelector('[data-testid=audience-qr]');
        const w = img.width, h = img.height, c = document.createElement('canvas');
        c.width = w; c.height = h;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0, w, h);
        const px = g.getImageData(0, 0, w, h).data, out = new Uint8Array(w * h);
        for (let i = 0; i < w * h; i++) out[i] = (px[4 * i] + px[4 * i + 1] + px[4 * i + 2]) / 3;
        let s = ''; for (const b of out) s += String.fromCharCode(b);
        return [w, h, btoa(s)];
    }""")
    image = memoryview(base64.b64decode(grey)).cast("B", (h, w))
    found = zxingcpp.read_barcodes(image)
    assert [b.text for b in found] == [f"{audience_server.base_url}/join"]
    expect()(screen.locator("[data-testid=audience-url]")).to_have_text(f"{audience_server.base_url}/join")
