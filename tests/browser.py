"""A minimal browser for the example site's admin: cookies, CSRF, forms."""

from __future__ import annotations

import html.parser
import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request


class Browser:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies)
        )

    def request(self, path: str, data: dict | list | None = None) -> tuple[int, str]:
        url = self.base_url + path
        body = None
        headers = {"Referer": url}
        if data is not None:
            fields = list(data.items()) if isinstance(data, dict) else list(data)
            fields.append(("csrfmiddlewaretoken", self.csrf_token()))
            body = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(url, data=body, headers=headers)
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def csrf_token(self) -> str:
        for cookie in self.cookies:
            if cookie.name == "csrftoken":
                return cookie.value
        self.request("/admin/login/")
        for cookie in self.cookies:
            if cookie.name == "csrftoken":
                return cookie.value
        raise AssertionError("no CSRF cookie")

    def login(self, username: str, password: str) -> None:
        status, body = self.request(
            "/admin/login/?next=/admin/",
            {"username": username, "password": password, "next": "/admin/"},
        )
        assert status == 200 and "logout" in body.lower(), f"login failed: {status}"

    def token(self) -> str:
        status, body = self.request("/wsserver/token/")
        assert status == 200, (status, body)
        return json.loads(body)["token"]

    # The admin

    def add(self, model: str, **fields: str) -> None:
        status, body = self.request(
            f"/admin/catalog/{model}/add/", {**fields, "_save": "Save"}
        )
        assert status == 200 and "errornote" not in body, body[:2000]

    def change(self, model: str, pk: str, **fields: str) -> None:
        status, body = self.request(
            f"/admin/catalog/{model}/{pk}/change/", {**fields, "_save": "Save"}
        )
        assert status == 200 and "errornote" not in body, body[:2000]

    def delete(self, model: str, pk: str) -> None:
        status, body = self.request(
            f"/admin/catalog/{model}/{pk}/delete/", {"post": "yes"}
        )
        assert status == 200, body[:2000]

    def submit_form(
        self, path: str, changes: dict[str, str | list[str] | None]
    ) -> tuple[int, str]:
        """Post a page's form back as a browser would, with some fields changed.

        A value of None unchecks a checkbox (removes the field); a list sets
        every selected value of a multiple select.
        """
        status, page = self.request(path)
        assert status == 200, (status, page[:500])
        parser = _FormFields()
        parser.feed(page)
        fields = [(k, v) for k, v in parser.fields if k not in changes]
        for name, value in changes.items():
            if isinstance(value, list):
                fields += [(name, item) for item in value]
            elif value is not None:
                fields.append((name, value))
        fields.append(("_save", "Save"))
        return self.request(path, fields)

    def delete_selected(self, model: str, pks: list[str]) -> None:
        fields = [("action", "delete_selected"), ("post", "yes"), ("index", "0")]
        fields += [("_selected_action", pk) for pk in pks]
        status, body = self.request(f"/admin/catalog/{model}/", fields)
        assert status == 200, body[:2000]


class _FormFields(html.parser.HTMLParser):
    """The fields a browser would submit from a page's forms (enough for the admin)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        name = attributes.get("name")
        if tag == "input" and name and name != "csrfmiddlewaretoken":
            kind = attributes.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in attributes:
                    self.fields.append((name, attributes.get("value") or "on"))
            elif kind not in ("submit", "button", "file", "image"):
                self.fields.append((name, attributes.get("value") or ""))
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in attributes:
            self.fields.append((self._select, attributes.get("value") or ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields.append((name, ""))

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            name, value = self.fields.pop()
            self.fields.append((name, value + data))
