"""The console (zpydb/web/console/) in a real headless Chromium, through Selenium.

Debian's ``chromium`` and ``chromium-driver`` (scripts/ensure-chromium.sh,
run by ``make test``).  The network is closed, so Chromium starts with
everything that would call out switched off and a fresh profile.  A machine
without them skips loudly, except under CI (``CI`` set), where that fails.

``ZPYDB_SCREENSHOTS=DIR`` saves the screenshots of docs/web.md there.
"""

import os
import time
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


def node(driver, path):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, f'li.node[data-path="{path}"]')


def row_text(driver, path):
    from selenium.webdriver.common.by import By
    return node(driver, path).find_element(By.CSS_SELECTOR, ":scope > .row").text


def open_console(driver, site):
    driver.get(site.base + "/")
    wait_for(lambda: idle(driver) and node(driver, "/"), what="the console to load")


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
    wait_for(lambda: idle(browser) and node(browser, "/users/ann"), what="users to expand")
    node(browser, "/users/ann").find_element(By.CSS_SELECTOR, ".toggle").click()
    wait_for(lambda: idle(browser) and node(browser, "/users/ann/name"), what="ann to expand")
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
    wait_for(lambda: idle(browser) and "31" in row_text(browser, "/users/ann/age"),
             what="the edit to show")
    assert site.value("users", "ann", "age") == 31
    wait_for(lambda: "PUT /users/ann/age.json" in browser.find_element(By.ID, "history").text,
             what="the history panel to list the change")
    assert site.history(1)[0]["note"] == "PUT /users/ann/age.json"

    # undo with the button: back to 30 in the database and on the page
    browser.find_element(By.ID, "undo").click()
    wait_for(lambda: idle(browser) and "30" in row_text(browser, "/users/ann/age"),
             what="the undo to show")
    assert site.value("users", "ann", "age") == 30
    assert "undone: undo: PUT /users/ann/age.json" in browser.find_element(By.ID, "status").text
    browser.find_element(By.ID, "redo").click()
    wait_for(lambda: idle(browser) and "31" in row_text(browser, "/users/ann/age"),
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
    wait_for(lambda: idle(browser) and site.value("d", "new key") == {"x": [1, 2]},
             what="the key to be added")
    click_action("/l", ".add")
    dialog_save(None, '"two"')
    wait_for(lambda: idle(browser) and site.value("l") == [1, "two"], what="the item to be appended")

    node(browser, "/d").find_element(By.CSS_SELECTOR, ".toggle").click()
    wait_for(lambda: idle(browser) and node(browser, "/d/a"), what="d to expand")
    click_action("/d/a", ".delete")
    wait_for(lambda: idle(browser) and site.value("d") == {"new key": {"x": [1, 2]}},
             what="the key to be deleted")

    click_action("/d", ".edit-json")
    area = wait_for(lambda: browser.find_element(By.ID, "editor-text"))
    wait_for(lambda: '"new key"' in area.get_attribute("value"), what="the JSON to load")
    assert not browser.find_element(By.ID, "editor-key").is_displayed()  # no key to give here
    screenshot(browser, "console-json.png")
    dialog_save(None, '{"replaced": true}')
    wait_for(lambda: idle(browser) and site.value("d") == {"replaced": True},
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
    wait_for(lambda: idle(browser) and site.value("d") == {"new key": {"x": [1, 2]}})
    assert no_alert(browser)


def test_hostile_keys_and_values_are_text(browser, site):
    from selenium.webdriver.common.by import By
    site.send("PUT", "/.json", {XSS: XSS, "s": XSS_SCRIPT,
                                "nested": {XSS_SCRIPT: {"$dict": [[5, XSS]]}},
                                "list": [XSS, {"$bytes": "PGI+"}]})
    open_console(browser, site)
    for path in ("/nested", "/list"):
        node(browser, path).find_element(By.CSS_SELECTOR, ".toggle").click()
        wait_for(lambda: idle(browser), what=f"{path} to expand")
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
    wait_for(lambda: idle(browser) and XSS in xss_node.text, what="the hostile key to expand")
    assert "5" in [k.text for k in xss_node.find_elements(By.CSS_SELECTOR, ".key.typed")]
    # edit the hostile value through the page: stored as the same text
    value = [li for li in browser.find_elements(By.CSS_SELECTOR, "#tree > li > ul > li.node")
             if li.find_element(By.CSS_SELECTOR, ".key").text == XSS][0]
    value.find_element(By.CSS_SELECTOR, ".value").click()
    from selenium.webdriver.common.keys import Keys
    field = value.find_element(By.CSS_SELECTOR, "input.inline-edit")
    field.send_keys(Keys.END, Keys.BACK_SPACE, "!\"", Keys.ENTER)
    wait_for(lambda: idle(browser) and site.value(XSS) == XSS + "!", what="the edit to land")
    browser.find_element(By.ID, "refresh").click()
    wait_for(lambda: idle(browser))
    history = browser.find_element(By.ID, "history").text
    assert "PUT /%3Cimg" in history  # notes are text too
    assert browser.execute_script("return document.images.length") == 0
    screenshot(browser, "console-xss.png")
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
