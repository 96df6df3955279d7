"""The app starts, renders in a real browser, and contacts no other host."""

from .conftest import screenshot, wait_for_app


def test_app_loads_and_renders(streamlit_server, browser_page):
    page = browser_page.page
    page.goto(streamlit_server)
    wait_for_app(page)

    shot = screenshot(page, "smoke")

    assert shot.stat().st_size > 0
    assert page.title().strip(), "the page has no title"
    main_text = page.locator('[data-testid="stMain"]').inner_text()
    assert main_text.strip(), "the app rendered no text"
