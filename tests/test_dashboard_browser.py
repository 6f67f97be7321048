"""The dashboard in a real browser (headless Chromium) against the real `ledger serve
--workers 2`: the page shows the numbers the read models hold, a seller sees only their
own, a command sent to the API shows on the open page within a second without a reload,
and screenshots at laptop and phone sizes are kept under test-artifacts/screenshots/.

One backend (SQLite) here: the data path behind the page runs on both backends in
tests/test_dashboard_data.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from ledger import FixedClock, Ledger
from tests.support.browser import (
    LAPTOP,
    PHONE,
    chromium,
    figure,
    require_chromium,
    screenshot,
    sign_in,
    table_rows,
    wait_for,
)
from tests.support.helpers import (
    approve,
    create_campaign,
    iso,
    record_performance,
    register,
)
from tests.support.service import add_token, bearer, serving

CAMPAIGN = "live-now"
LIVE_WITHIN = 1.0  # seconds from an accepted command to the open page showing it


@dataclass
class Site:
    """A running `ledger serve` on a seeded store, a token per actor, and its timeline."""

    base: str
    tokens: dict[str, str]
    registrations: dict[str, str]
    year: int
    reports: int = 0

    def get(self, who: str, path: str) -> Any:
        response = httpx.get(f"{self.base}{path}", headers=bearer(self.tokens[who]),
                             params={"fresh": "true"}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def report(self, seller: str, gmv: str) -> int:
        """Send a performance report (as the system) for the last hour; its position."""
        self.reports += 1
        now = datetime.now(UTC)
        cmd = record_performance(self.registrations[seller], report_id=f"live-{self.reports}",
                                 period=(now - timedelta(hours=1), now - timedelta(minutes=1)),
                                 gmv=gmv, orders=3)
        response = httpx.post(f"{self.base}/v1/commands", json=cmd, timeout=10,
                              headers=bearer(self.tokens["system"]))
        assert response.status_code == 200, response.text
        return int(response.json()["position"])


def seed(url: str) -> tuple[dict[str, str], int]:
    """An ongoing manual campaign (started four days ago) with two approved sellers who
    have reported, and a third under review; written on a clock in the past, as if the
    campaign had run for days before the page was opened."""
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(days=5)
    clock = FixedClock(t0)
    starts = t0 + timedelta(days=1)
    session = {"starts_at": iso(t0 + timedelta(days=2)),
               "ends_at": iso(t0 + timedelta(days=2, hours=2))}
    registrations: dict[str, str] = {}
    with Ledger.open(url, clock=clock, pool_size=1) as ledger:
        assert ledger.send(create_campaign(
            CAMPAIGN, name="Live now sale", registration_opens_at=iso(t0 - timedelta(days=1)),
            registration_closes_at=iso(starts), starts_at=iso(starts),
            ends_at=iso(now + timedelta(days=5))))["ok"]
        for seller in ("seller-1", "seller-2", "seller-3"):
            result = ledger.send(register(CAMPAIGN, seller_id=seller, account_id=f"shop-{seller}",
                                          sessions=[session]))
            registrations[seller] = str(result["aggregate_id"])
        clock.set(t0 + timedelta(hours=5))
        for seller in ("seller-1", "seller-2"):
            assert ledger.send(approve(registrations[seller]))["ok"]
        clock.set(t0 + timedelta(days=3))
        for seller, gmv in (("seller-1", "1000.50"), ("seller-2", "250.25")):
            assert ledger.send(record_performance(
                registrations[seller], report_id=f"seed-{seller}", gmv=gmv,
                period=(t0 + timedelta(days=2), t0 + timedelta(days=2, hours=2))))["ok"]
    return registrations, (t0 + timedelta(days=2)).year


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_chromium()  # before the server: a missing browser fails at once, and clearly
    folder = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{folder / 'ledger.db'}"
    registrations, year = seed(url)
    tokens = {who: add_token(url, role, who) for who, role in (
        ("operator", "operator"), ("system", "system"), ("seller-1", "seller"),
        ("seller-2", "seller"))}
    with serving(url, Path(folder / "serve.log"), "--workers", "2") as server:
        yield Site(server.base, tokens, registrations, year)


@pytest.fixture
def laptop() -> Iterator[WebDriver]:
    with chromium(LAPTOP) as driver:
        yield driver


def campaign_numbers(site: Site) -> dict[str, str]:
    """The campaign's figures as the read model holds them, in the page's `data-value`s."""
    report = site.get("operator", f"/v1/campaigns/{CAMPAIGN}/performance")
    return {"gmv": " ".join(f"{t['gmv']} {t['currency']}" for t in report["totals"]),
            "orders": str(sum(t["orders"] for t in report["totals"])),
            "approval-rate": report["approval"]["approval_rate"],
            "registrations": str(report["registrations"]["total"])}


def shown(driver: WebDriver, names: list[str]) -> dict[str, str | None]:
    return {name: figure(driver, name) for name in names}


def test_the_campaign_page_shows_what_the_read_models_hold(site: Site, laptop: WebDriver) -> None:
    expected = campaign_numbers(site)
    sign_in(laptop, site.base, site.tokens["operator"])
    wait_for(laptop, lambda d: shown(d, list(expected)) == expected,
             what=f"the campaign's figures {expected}")
    assert expected["gmv"] == "1250.75 THB"
    assert expected["approval-rate"] == "1.0000"
    assert [row[:2] for row in table_rows(laptop, "sellers")] == [
        ["seller-1", "1,000.50"], ["seller-2", "250.25"]]
    assert dict(table_rows(laptop, "statuses")) == {"approved": "2", "under_review": "1"}
    assert laptop.find_elements(By.CSS_SELECTOR, ".chart canvas"), "no chart was drawn"
    screenshot(laptop, "campaign-laptop")

    laptop.find_element(By.CSS_SELECTOR, 'nav button[data-tab="review"]').click()
    wait_for(laptop, lambda d: figure(d, "under-review") == "1", what="the review queue")
    assert figure(laptop, "decided") == "2"
    screenshot(laptop, "review-laptop")


def test_a_command_shows_on_the_open_page_within_a_second_without_a_reload(
        site: Site, laptop: WebDriver) -> None:
    sign_in(laptop, site.base, site.tokens["operator"])
    before = wait_for(laptop, lambda d: figure(d, "gmv"), what="the GMV")
    wait_for(laptop, lambda d: d.execute_script(
        "const live = document.getElementById('live');"
        "return live.classList.contains('on') && live.textContent.includes('position')"),
        what="the live feed")
    laptop.execute_script("window.notReloaded = true")

    site.report("seller-2", "100.00")
    sent = time.monotonic()
    after = wait_for(laptop, lambda d: (v := figure(d, "gmv")) != before and v, within=5,
                     what="the new GMV")
    took = time.monotonic() - sent

    assert after == campaign_numbers(site)["gmv"]
    assert laptop.execute_script("return window.notReloaded === true"), "the page reloaded"
    assert took < LIVE_WITHIN, f"the page showed the command after {took:.2f} s"
    print(f"command → page: {took * 1000:.0f} ms")


def test_a_seller_sees_their_own_year_and_nothing_of_another_seller(site: Site) -> None:
    own = site.get("seller-1", f"/v1/sellers/seller-1/performance/{site.year}")
    expected = " ".join(f"{t['gmv']} {t['currency']}" for t in own["totals"])
    with chromium(PHONE) as phone:
        sign_in(phone, site.base, site.tokens["seller-1"])
        wait_for(phone, lambda d: figure(d, "ytd-gmv") == expected, what="the seller's GMV")
        assert figure(phone, "campaigns-joined") == "1"
        visible = [b.text for b in phone.find_elements(By.CSS_SELECTOR, "nav button")
                   if b.is_displayed()]
        assert visible == ["Seller year"]
        seller_box = phone.find_element(By.ID, "ytd-seller")
        assert (seller_box.get_attribute("value"), seller_box.get_attribute("readonly")) == (
            "seller-1", "true")
        screenshot(phone, "seller-year-phone")
        # The page's own token, asking for another seller's page or the campaign's: refused.
        statuses = phone.execute_script("""
            const auth = {Authorization: `Bearer ${sessionStorage.getItem("ledger.token")}`};
            const paths = arguments[0];
            return Promise.all(paths.map((p) => fetch(p, {headers: auth}).then((r) => r.status)));
        """, [f"/v1/sellers/seller-2/performance/{site.year}",
              f"/v1/campaigns/{CAMPAIGN}/performance", "/dashboard/api/review"])
        assert statuses == [403, 403, 403]
        assert "250.25" not in phone.find_element(By.TAG_NAME, "body").text


def test_the_campaign_page_reads_on_a_phone(site: Site) -> None:
    with chromium(PHONE) as phone:
        sign_in(phone, site.base, site.tokens["operator"])
        wait_for(phone, lambda d: figure(d, "gmv"), what="the GMV")
        wait_for(phone, lambda d: d.find_elements(By.CSS_SELECTOR, ".chart canvas"),
                 what="a chart")
        width = phone.execute_script("return document.documentElement.scrollWidth")
        viewport = phone.execute_script("return window.innerWidth")
        assert width <= viewport, f"the page is {width}px wide on a {viewport}px phone"
        screenshot(phone, "campaign-phone")


def test_an_unknown_token_is_told_so_on_the_sign_in_form(site: Site, laptop: WebDriver) -> None:
    laptop.get(f"{site.base}/dashboard")
    wait_for(laptop, lambda d: d.find_element(By.ID, "token")).send_keys("lgr_not-a-token")
    laptop.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    message = wait_for(laptop, lambda d: d.find_element(By.ID, "sign-in-error").text,
                       what="the refusal")
    assert message == "That token is unknown or was revoked."
    assert laptop.execute_script("return sessionStorage.getItem('ledger.token')") is None


def test_signing_out_forgets_the_token_and_stops_the_feed(site: Site,
                                                          laptop: WebDriver) -> None:
    sign_in(laptop, site.base, site.tokens["operator"])
    assert laptop.find_element(By.ID, "actor").text == "operator (operator)"
    laptop.find_element(By.ID, "sign-out").click()
    wait_for(laptop, lambda d: d.find_element(By.ID, "sign-in").is_displayed(),
             what="the sign-in form")
    assert laptop.execute_script("return sessionStorage.getItem('ledger.token')") is None
    assert laptop.find_element(By.ID, "live").text == "not connected"
    assert figure(laptop, "gmv") is None
