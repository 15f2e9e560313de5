"""A minimal browser for the example site's admin: cookies, CSRF, forms."""

from __future__ import annotations

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

    def delete_selected(self, model: str, pks: list[str]) -> None:
        fields = [("action", "delete_selected"), ("post", "yes"), ("index", "0")]
        fields += [("_selected_action", pk) for pk in pks]
        status, body = self.request(f"/admin/catalog/{model}/", fields)
        assert status == 200, body[:2000]
