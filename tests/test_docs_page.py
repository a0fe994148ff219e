"""`/docs` in a real browser: Swagger UI from this server, no request leaving the host."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


def test_the_api_console_loads_from_this_server_only(make_page):
    from playwright.sync_api import expect

    page = make_page()
    page.goto(page.server.base_url + "/docs")
    # operations are listed once the bundle ran and fetched /openapi.json
    expect(page.locator(".opblock-summary-path", has_text="/api/replicas/{replica_id}/kv/{key}").first).to_be_visible(
        timeout=20_000)
    assert page.foreign == [], f"requests left the host: {page.foreign}"
    assert any(u.endswith("/swagger/swagger-ui-bundle.js") for u in page.requests)
    assert page.errors == []
