"""The tracking pixel on the legacy door, through the real server (spec/tracking-pixel.md)."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import httpx

from tests.e2e.conftest import Server

PATH = "/postback/v3/event/test_db/px"
GIF_HEAD = b"GIF89a\x01\x00\x01\x00"
GID = "0b8f3e1c-2f3a-4b5c-8d9e-0123456789ab"


def pixel(
    server: Server, params: dict[str, str] | list[tuple[str, str]], **kw: Any
) -> httpx.Response:
    query = urllib.parse.urlencode(params)
    method = kw.pop("method", "GET")
    return httpx.request(method, f"{server.url}{PATH}?{query}", timeout=30, **kw)


def base(server: Server, **more: str) -> dict[str, str]:
    return {"td_format": "pixel", "td_write_key": server.write_key, **more}


def assert_gif(r: httpx.Response, body: bool = True) -> None:
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/gif"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-length"] == "43"
    if body:
        assert len(r.content) == 43 and r.content.startswith(GIF_HEAD)


def global_id_cookie(r: httpx.Response) -> str:
    (cookie,) = [c for c in r.headers.get_list("set-cookie") if c.startswith("_tdedge_global_id=")]
    return cookie.partition("=")[2].partition(";")[0]


def test_every_parameter_is_a_string_column(server: Server) -> None:
    r = pixel(server, base(server, n="42", f="1.5", b="true", empty="", text="héllo wörld"))
    assert_gif(r)
    rows = server.wait_for(
        "SELECT n, f, b, empty, text, typeof(n) AS tn, typeof(f) AS tf, typeof(b) AS tb "
        "FROM test_db.px",
        lambda rows: len(rows) == 1,
    )
    assert rows == [
        {
            "n": "42",
            "f": "1.5",
            "b": "true",
            "empty": "",
            "text": "héllo wörld",
            "tn": "VARCHAR",
            "tf": "VARCHAR",
            "tb": "VARCHAR",
        }
    ]
    columns = {c["column_name"] for c in server.query("DESCRIBE test_db.px")}
    # The special parameters are not columns.
    assert columns == {"time", "n", "f", "b", "empty", "text"}


def test_record_time_and_server_values(server: Server) -> None:
    r = pixel(
        server,
        base(
            server,
            k="v",
            td_record_time="1448344701",
            td_ip="td_ip",
            td_ua="td_ua",
            td_global_id="td_global_id",
        ),
        headers={
            "User-Agent": "PixelTest/1.0 (like a browser)",
            "Cookie": f"_tdedge_global_id={GID}",
        },
    )
    assert_gif(r)
    assert global_id_cookie(r) == GID  # renewed, not replaced
    # Without the cookie a new id is minted, stored and set.
    fresh = pixel(server, base(server, k="fresh", td_global_id="td_global_id"))
    new_id = global_id_cookie(fresh)
    assert new_id != GID
    # A real value for a special name is an ordinary column.
    pixel(server, base(server, k="own", td_ip="9.9.9.9"))
    rows = server.wait_for(
        "SELECT k, time, td_ip, td_ua, td_global_id FROM test_db.px ORDER BY k",
        lambda rows: len(rows) == 3,
    )
    assert rows[0] == {
        "k": "fresh",
        "time": rows[0]["time"],
        "td_ip": None,
        "td_ua": None,
        "td_global_id": new_id,
    }
    assert abs(rows[0]["time"] - time.time()) < 60
    assert rows[1] == {"k": "own", "time": rows[1]["time"], "td_ip": "9.9.9.9", "td_ua": None,
                       "td_global_id": None}  # fmt: skip
    assert rows[2] == {
        "k": "v",
        "time": 1448344701,
        "td_ip": "127.0.0.1",
        "td_ua": "PixelTest/1.0 (like a browser)",
        "td_global_id": GID,
    }


def test_forwarded_for_only_from_trusted_proxies(make_server: Any) -> None:
    plain: Server = make_server()
    behind: Server = make_server(["--trusted-proxy", "127.0.0.0/8"])
    for srv in (plain, behind):
        r = pixel(
            srv,
            base(srv, td_ip="td_ip"),
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
        )
        assert_gif(r)
    plain.wait_for("SELECT td_ip FROM test_db.px", lambda rows: rows == [{"td_ip": "127.0.0.1"}])
    behind.wait_for("SELECT td_ip FROM test_db.px", lambda rows: rows == [{"td_ip": "203.0.113.9"}])


def test_bad_or_missing_key_still_answers_the_gif(server: Server) -> None:
    assert_gif(pixel(server, base(server, who="good")))
    assert_gif(pixel(server, {"td_format": "pixel", "who": "nokey"}))
    assert_gif(pixel(server, base(server, who="badkey", td_write_key="1/not-a-key")))
    assert_gif(
        httpx.get(
            f"{server.url}/postback/v3/event/bad-db/px?td_format=pixel&who=badname"
            f"&td_write_key={urllib.parse.quote(server.write_key)}"
        )
    )
    server.wait_for("SELECT who FROM test_db.px", lambda rows: rows == [{"who": "good"}])
    errs = server.wait_errors(lambda e: len(e) == 3)
    assert sorted((e["reason"], e["door"]) for e in errs) == [
        ("invalid_name", "pixel"),
        ("missing_key", "pixel"),
        ("unknown_key", "pixel"),
    ]
    assert not any(server.write_key in e["record"] for e in errs)


def test_redirects_are_refused_by_default_and_the_record_kept(server: Server) -> None:
    r = pixel(server, base(server, k="refused", td_redirect="https://shop.tdedge.test/x"))
    assert r.status_code == 400
    assert r.json()["error"] == "redirect_not_allowed"
    assert "location" not in r.headers
    server.wait_for("SELECT k FROM test_db.px", lambda rows: rows == [{"k": "refused"}])


def test_redirect_to_allowed_hosts_with_the_global_id(make_server: Any) -> None:
    srv: Server = make_server(
        ["--redirect-host", "shop.tdedge.test", "--redirect-host", "*.cdn.tdedge.test"]
    )
    target = "https://shop.tdedge.test/landing?uid=td_global_id&x=1#frag"
    r = pixel(
        srv, base(srv, k="go", td_redirect=target), headers={"Cookie": f"_tdedge_global_id={GID}"}
    )
    assert r.status_code == 302
    assert r.headers["location"] == f"https://shop.tdedge.test/landing?uid={GID}&x=1#frag"
    assert r.headers["cache-control"] == "no-store"
    # A first visit: the id is minted, set as a cookie and put in the URL.
    r = pixel(srv, base(srv, k="first", td_redirect=target))
    minted = global_id_cookie(r)
    assert r.headers["location"].startswith(f"https://shop.tdedge.test/landing?uid={minted}&")
    r = pixel(srv, base(srv, k="sub", td_redirect="https://img.cdn.tdedge.test/a.png"))
    assert (r.status_code, r.headers["location"]) == (302, "https://img.cdn.tdedge.test/a.png")
    for bad, code in [
        ("https://evil.tdedge.test/", "redirect_not_allowed"),
        ("https://shop.tdedge.test.evil.test/", "redirect_not_allowed"),
        ("https://shop.tdedge.test@evil.test/", "redirect_not_allowed"),
        ("https://evil.test\\@shop.tdedge.test/", "invalid_redirect"),
        ("https://shop.tdedge.test/\r\nSet-Cookie: owned=1", "invalid_redirect"),
        ("javascript:alert(1)", "invalid_redirect"),
    ]:
        r = pixel(srv, base(srv, k="bad", td_redirect=bad))
        assert (r.status_code, r.json()["error"]) == (400, code), bad
        assert "location" not in r.headers
        assert "owned" not in str(r.headers)
    srv.wait_for(
        "SELECT k, count(*) AS n FROM test_db.px GROUP BY k ORDER BY k",
        lambda rows: (
            rows
            == [
                {"k": "bad", "n": 6},
                {"k": "first", "n": 1},
                {"k": "go", "n": 1},
                {"k": "sub", "n": 1},
            ]
        ),
    )


def test_head_and_post_form_behave_like_get(server: Server) -> None:
    params = base(server, via="head", td_ua="td_ua")
    head = pixel(server, params, method="HEAD", headers={"User-Agent": "UA-head"})
    assert_gif(head, body=False)
    assert head.content == b""
    form = urllib.parse.urlencode(base(server, via="post", td_ua="td_ua"))
    post = httpx.post(
        f"{server.url}{PATH}",
        content=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "UA-post"},
    )
    assert_gif(post)
    # td_format=pixel in the URL, the rest in the form.
    post2 = httpx.post(
        f"{server.url}{PATH}?td_format=pixel",
        content=urllib.parse.urlencode(
            {"via": "post_url", "n": "7", "td_write_key": server.write_key}
        ),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_gif(post2)
    # A bad table name: the GIF and an import error, as for the GET.
    post3 = httpx.post(
        f"{server.url}/postback/v3/event/test_db/bad-name",
        content=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_gif(post3)
    rows = server.wait_for(
        "SELECT via, td_ua, n FROM test_db.px ORDER BY via", lambda rows: len(rows) == 3
    )
    assert rows == [
        {"via": "head", "td_ua": "UA-head", "n": None},
        {"via": "post", "td_ua": "UA-post", "n": None},
        {"via": "post_url", "td_ua": None, "n": "7"},
    ]
    errs = server.wait_errors(lambda e: len(e) == 1)
    assert [(e["reason"], e["door"], e["table_name"]) for e in errs] == [
        ("invalid_name", "pixel", "bad-name")
    ]


def test_get_without_pixel_format_is_still_405(server: Server) -> None:
    r = httpx.get(f"{server.url}{PATH}?td_write_key=x&a=1")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]
