"""The console (zpydb/web/console/) in a real headless Chromium, through Selenium.

Debian's ``chromium`` and ``chromium-driver`` (scripts/ensure-chromium.sh,
run by ``make test``).  The network is closed, so Chromium starts with
everything that would call out switched off and a fresh profile.  A machine
without them skips loudly, except under CI (``CI`` set), where that fails.

``ZPYDB_SCREENSHOTS=DIR`` saves the screenshots of docs/web.md there.
"""

import os
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.webtools import start_site

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
XSS = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "<script>alert(2)</script>"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed in CI: scripts/ensure-chromium.sh must install it")
        pytest.skip("chromium/chromedriver not found: CONSOLE NOT TESTED "
                    "(run `make chromium` or apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1200,800"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER,
                                      log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def site(tmp_path, request):
    return start_site("file", tmp_path, request)


def wait_for(condition, timeout=30, what="the condition"):
    """Poll ``condition()`` until it is truthy (returned) or the time is up (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except Exception as exc:  # the element is being redrawn: look again
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def idle(driver):
    """The console has no request in flight."""
    return driver.execute_script("return document.body.dataset.pending") == "0"


def settled(driver, site):
    """Idle, and the live updates have reached the newest change (so no redraw is coming)."""
    newest = site.get("/.history.json?n=1")
    seen = driver.execute_script("return document.body.dataset.lastEvent")
    return idle(driver) and (not newest or seen == newest[0]["id"])


def until(driver, condition, what, timeout=30):
    """A bounded WebDriverWait; an element redrawn under it (stale) is looked up again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(condition, what)


def node(driver, path):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, f'li.node[data-path="{path}"]')


def row_text(driver, path):
    from selenium.webdriver.common.by import By
    return node(driver, path).find_element(By.CSS_SELECTOR, ":scope > .row").text


def open_console(driver, site):
    driver.get(site.base + "/")
    wait_for(lambda: settled(driver, site) and node(driver, "/"), what="the console to load")


def no_alert(driver):
    from selenium.common.exceptions import NoAlertPresentException
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return True
    raise AssertionError(f"an alert opened: {text!r}")


def screenshot(driver, name):
    directory = os.environ.get("ZPYDB_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(directory) / name))


def test_browse_edit_undo(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    site.send("PUT", "/.json", {"users": {"ann": {"name": "Ann", "age": 30, "tags": ["a", "b"]},
                                          "bob": {"name": "Bob"}},
                                "settings": {"theme": "dark"}})
    open_console(browser, site)
    tree = browser.find_element(By.ID, "tree").text
    assert "users" in tree and "settings" in tree and "Ann" not in tree  # one level at a time

    # expand a node: its children appear, one more level only
    node(browser, "/users").find_element(By.CSS_SELECTOR, ".toggle").click()
    wait_for(lambda: settled(browser, site) and node(browser, "/users/ann"), what="users to expand")
    node(browser, "/users/ann").find_element(By.CSS_SELECTOR, ".toggle").click()
    wait_for(lambda: settled(browser, site) and node(browser, "/users/ann/name"), what="ann to expand")
    assert '"Ann"' in row_text(browser, "/users/ann/name")
    assert "[2 items]" in row_text(browser, "/users/ann/tags")
    screenshot(browser, "console-tree.png")

    # edit a scalar in place: the change is in the database
    value = node(browser, "/users/ann/age").find_element(By.CSS_SELECTOR, ".value")
    value.click()
    field = wait_for(lambda: node(browser, "/users/ann/age").find_element(By.CSS_SELECTOR,
                                                                          "input.inline-edit"))
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("31", Keys.ENTER)
    wait_for(lambda: settled(browser, site) and "31" in row_text(browser, "/users/ann/age"),
             what="the edit to show")
    assert site.value("users", "ann", "age") == 31
    wait_for(lambda: "PUT /users/ann/age.json" in browser.find_element(By.ID, "history").text,
             what="the history panel to list the change")
    assert site.history(1)[0]["note"] == "PUT /users/ann/age.json"

    # undo with the button: back to 30 in the database and on the page
    browser.find_element(By.ID, "undo").click()
    wait_for(lambda: settled(browser, site) and "30" in row_text(browser, "/users/ann/age"),
             what="the undo to show")
    assert site.value("users", "ann", "age") == 30
    assert "undone: undo: PUT /users/ann/age.json" in browser.find_element(By.ID, "status").text
    browser.find_element(By.ID, "redo").click()
    wait_for(lambda: settled(browser, site) and "31" in row_text(browser, "/users/ann/age"),
             what="the redo to show")
    assert site.value("users", "ann", "age") == 31
    screenshot(browser, "console-history.png")
    assert no_alert(browser)


def test_add_delete_and_edit_as_json(browser, site):
    from selenium.webdriver.common.by import By
    site.send("PUT", "/.json", {"d": {"a": 1}, "l": [1]})
    open_console(browser, site)

    def dialog_save(key, text, shot=None):
        if key is not None:
            browser.find_element(By.ID, "editor-key").send_keys(key)
        area = browser.find_element(By.ID, "editor-text")
        area.clear()
        area.send_keys(text)
        if shot:
            screenshot(browser, shot)
        browser.find_element(By.ID, "editor-save").click()

    def click_action(path, css):
        row = node(browser, path).find_element(By.CSS_SELECTOR, ":scope > .row")
        browser.execute_script("arguments[0].scrollIntoView()", row)
        from selenium.webdriver.common.action_chains import ActionChains
        ActionChains(browser).move_to_element(row).perform()  # actions show on hover
        row.find_element(By.CSS_SELECTOR, css).click()

    click_action("/d", ".add")
    assert browser.find_element(By.ID, "editor-key").is_displayed()
    dialog_save("new key", '{"x": [1, 2]}', shot="console-add.png")
    wait_for(lambda: settled(browser, site) and site.value("d", "new key") == {"x": [1, 2]},
             what="the key to be added")
    click_action("/l", ".add")
    dialog_save(None, '"two"')
    wait_for(lambda: settled(browser, site) and site.value("l") == [1, "two"], what="the item to be appended")

    node(browser, "/d").find_element(By.CSS_SELECTOR, ".toggle").click()
    wait_for(lambda: settled(browser, site) and node(browser, "/d/a"), what="d to expand")
    click_action("/d/a", ".delete")
    wait_for(lambda: settled(browser, site) and site.value("d") == {"new key": {"x": [1, 2]}},
             what="the key to be deleted")

    click_action("/d", ".edit-json")
    area = wait_for(lambda: browser.find_element(By.ID, "editor-text"))
    wait_for(lambda: '"new key"' in area.get_attribute("value"), what="the JSON to load")
    assert not browser.find_element(By.ID, "editor-key").is_displayed()  # no key to give here
    screenshot(browser, "console-json.png")
    dialog_save(None, '{"replaced": true}')
    wait_for(lambda: settled(browser, site) and site.value("d") == {"replaced": True},
             what="the subtree to be replaced")

    # bad JSON in the editor: refused in the page, nothing sent
    before = site.history(1)
    click_action("/d", ".edit-json")
    wait_for(lambda: "replaced" in browser.find_element(By.ID, "editor-text").get_attribute("value"))
    dialog_save(None, "{not json")
    wait_for(lambda: "not JSON" in browser.find_element(By.ID, "editor-error").text)
    browser.find_element(By.ID, "editor-cancel").click()
    assert site.history(1) == before and site.value("d") == {"replaced": True}

    # a refused write shows the server's error
    browser.find_element(By.ID, "undo").click()
    wait_for(lambda: settled(browser, site) and site.value("d") == {"new key": {"x": [1, 2]}})
    assert no_alert(browser)


def test_hostile_keys_and_values_are_text(browser, site):
    from selenium.webdriver.common.by import By
    site.send("PUT", "/.json", {XSS: XSS, "s": XSS_SCRIPT,
                                "nested": {XSS_SCRIPT: {"$dict": [[5, XSS]]}},
                                "list": [XSS, {"$bytes": "PGI+"}]})
    open_console(browser, site)
    for path in ("/nested", "/list"):
        node(browser, path).find_element(By.CSS_SELECTOR, ".toggle").click()
        wait_for(lambda: settled(browser, site), what=f"{path} to expand")
    text = browser.find_element(By.ID, "tree").text
    assert XSS in text and XSS_SCRIPT in text
    # nothing of it became markup: no img or script element in the tree, no alert
    assert browser.find_elements(By.CSS_SELECTOR, "#tree img, #tree script") == []
    assert browser.execute_script("return document.images.length") == 0
    keys = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#tree .key")]
    assert XSS in keys and XSS_SCRIPT in keys
    # the XSS key's own child level, reached through its encoded path
    xss_node = [li for li in browser.find_elements(By.CSS_SELECTOR, "#tree li.node")
                if li.find_elements(By.CSS_SELECTOR, ":scope > .row > .key")
                and li.find_element(By.CSS_SELECTOR, ":scope > .row > .key").text == XSS_SCRIPT][0]
    xss_node.find_element(By.CSS_SELECTOR, ".toggle").click()
    wait_for(lambda: settled(browser, site) and XSS in xss_node.text, what="the hostile key to expand")
    assert "5" in [k.text for k in xss_node.find_elements(By.CSS_SELECTOR, ".key.typed")]
    # edit the hostile value through the page: stored as the same text
    value = [li for li in browser.find_elements(By.CSS_SELECTOR, "#tree > li > ul > li.node")
             if li.find_element(By.CSS_SELECTOR, ".key").text == XSS][0]
    value.find_element(By.CSS_SELECTOR, ".value").click()
    from selenium.webdriver.common.keys import Keys
    field = value.find_element(By.CSS_SELECTOR, "input.inline-edit")
    field.send_keys(Keys.END, Keys.BACK_SPACE, "!\"", Keys.ENTER)
    wait_for(lambda: settled(browser, site) and site.value(XSS) == XSS + "!", what="the edit to land")
    browser.find_element(By.ID, "refresh").click()
    wait_for(lambda: settled(browser, site))
    history = browser.find_element(By.ID, "history").text
    assert "PUT /%3Cimg" in history  # notes are text too
    assert browser.execute_script("return document.images.length") == 0
    screenshot(browser, "console-xss.png")
    assert no_alert(browser)


def test_a_write_through_the_api_shows_up_live(browser, site):
    from selenium.webdriver.common.by import By
    site.send("PUT", "/.json", {"users": {"ann": {"age": 30}}, "motd": "hello"})
    open_console(browser, site)
    node(browser, "/users").find_element(By.CSS_SELECTOR, ".toggle").click()
    wait_for(lambda: settled(browser, site) and node(browser, "/users/ann"))
    node(browser, "/users/ann").find_element(By.CSS_SELECTOR, ".toggle").click()
    wait_for(lambda: settled(browser, site) and node(browser, "/users/ann/age"))
    browser.execute_script("window.zpydbNotReloaded = true")  # gone if the page reloads
    assert "live" == browser.find_element(By.ID, "live").text

    # writes by another client, over HTTP: an expanded level, the top, a new key, a delete
    assert site.send("PUT", "/users/ann/age.json", 31)[0] == 200
    until(browser, lambda d: "31" in row_text(d, "/users/ann/age"), "the PUT to show without a reload")
    # (a PATCH key is a path: a "/" in it would name a level below)
    assert site.send("PATCH", "/.json", {"motd": XSS_SCRIPT, XSS: 1})[0] == 200
    until(browser, lambda d: XSS_SCRIPT in row_text(d, "/motd")
          and "PATCH /.json" in d.find_element(By.ID, "history").text,
          "the PATCH and its history entry to show")
    keys = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#tree .key")]
    assert XSS in keys
    assert site.send("DELETE", "/users/ann/age.json")[0] == 200
    until(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, 'li.node[data-path="/users/ann/age"]'),
        "the DELETE to show")
    assert browser.execute_script("return window.zpydbNotReloaded") is True
    assert browser.execute_script("return document.images.length") == 0
    assert no_alert(browser)


def test_a_history_entry_shows_the_old_tree_read_only_and_back_to_now(browser, site):
    from selenium.webdriver.common.by import By
    site.send("PUT", "/.json", {"cfg": {"port": 1}, XSS: "old " + XSS})
    old_id = site.get("/.history.json?n=1")[0]["id"]
    site.send("PUT", "/cfg/port.json", 2)
    site.send("DELETE", f"/{urllib.parse.quote(XSS, safe='')}.json")
    site.send("PUT", f"/{urllib.parse.quote(XSS_SCRIPT, safe='')}.json", "new")
    open_console(browser, site)
    node(browser, "/cfg").find_element(By.CSS_SELECTOR, ".toggle").click()
    wait_for(lambda: settled(browser, site) and '2' in row_text(browser, "/cfg/port"))
    history = browser.find_element(By.ID, "history").text
    assert "DELETE /%3Cimg" in history and "PUT /%3Cscript" in history  # notes as text

    entry = browser.find_element(By.CSS_SELECTOR, f'#history li[data-id="{old_id}"]')
    entry.click()
    banner = browser.find_element(By.ID, "past")
    until(browser, lambda d: banner.is_displayed() and idle(d)
        and d.find_element(By.ID, "tree").get_attribute("data-shown") == old_id,
        "the tree as it was")
    assert old_id in banner.text and "back to now" in banner.text
    assert "1" in row_text(browser, "/cfg/port")  # the old value, the old keys
    keys = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#tree .key")]
    assert XSS in keys and XSS_SCRIPT not in keys
    assert browser.find_element(By.CSS_SELECTOR, f'#history li[data-id="{old_id}"]').get_attribute(
        "aria-current") == "true"
    # read-only: no actions, no inline editor, undo and redo off
    assert browser.find_elements(By.CSS_SELECTOR, "#tree .actions, #tree button.add, "
                                                  "#tree button.delete") == []
    node(browser, "/cfg/port").find_element(By.CSS_SELECTOR, ".value").click()
    assert browser.find_elements(By.CSS_SELECTOR, "input.inline-edit") == []
    assert not browser.find_element(By.ID, "undo").is_enabled()
    assert not browser.find_element(By.ID, "redo").is_enabled()
    screenshot(browser, "console-past.png")

    # a change arriving meanwhile joins the history list; the past shown stays the past
    site.send("PUT", "/cfg/port.json", 3)
    until(browser, lambda d: settled(d, site) and "PUT /cfg/port.json" in
        d.find_element(By.CSS_SELECTOR, "#history li:first-child").text, "the new entry")
    assert "1" in row_text(browser, "/cfg/port")
    assert site.value("cfg", "port") == 3

    browser.find_element(By.ID, "now").click()
    until(browser, lambda d: not banner.is_displayed() and idle(d) and "3" in row_text(d, "/cfg/port")
        and d.find_element(By.ID, "tree").get_attribute("data-shown") == "now", "back to now")
    keys = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#tree .key")]
    assert XSS_SCRIPT in keys and XSS not in keys
    assert browser.find_element(By.ID, "undo").is_enabled()
    assert browser.find_elements(By.CSS_SELECTOR, "#tree button.delete")  # editable again
    assert browser.execute_script("return document.images.length") == 0
    assert no_alert(browser)


def test_a_token_server_asks_for_the_token(browser, tmp_path, request):
    from selenium.webdriver.common.by import By
    secret = "console-secret-0123456789"
    (tmp_path / "tokens.json").write_text(
        '{"tokens": [{"name": "ann", "secret": "%s", "read": ["/"], "write": ["/"]}]}' % secret)
    site = start_site("file", tmp_path, request, "--tokens", tmp_path / "tokens.json")
    site.send("PUT", "/x.json", 1, headers={"Authorization": f"Bearer {secret}"})
    browser.get(site.base + "/")
    wait_for(lambda: idle(browser) and "enter a token" in browser.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "token").send_keys(secret)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    wait_for(lambda: idle(browser) and node(browser, "/x"), what="the tree after the token")
    assert "1" in row_text(browser, "/x")
    browser.execute_script("sessionStorage.clear()")
    # ?auth= in the page URL is taken and removed from the address bar
    browser.get(site.base + f"/?auth={secret}")
    wait_for(lambda: idle(browser) and node(browser, "/x"))
    assert secret not in browser.current_url


def test_nothing_is_loaded_from_elsewhere(site):
    page = site.request("GET", "/")[2].decode()
    script = site.request("GET", "/.console/console.js")[2].decode()
    for text in (page, script):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
