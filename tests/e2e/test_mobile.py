"""The mobile SDKs through the real server: requests shaped byte for byte as
td-android-sdk and td-ios-sdk send them (1.x: the Data Ingestion API; before 1.0:
``/android/v3/event`` and ``/ios/v3/event``), their td_uuid and record_uuid, resends,
the answers the SDKs read, and a lake from before td_uuid was the clients'."""

from __future__ import annotations

import gzip
import re
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import msgspec

from tdedge.lake.extensions import connect
from tests.e2e.conftest import Server

RECORDS_HOST = "us01.records.in.tdedge.test"
INGEST = "application/vnd.treasuredata.v1+json"
INGEST_MOBILE = "application/vnd.treasuredata.v1.mobile+json"
TDEDGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
DEVICE = "5a3c1f0e-2b4d-4e6f-9a8b-7c6d5e4f3a2b"  # td_uuid: one per app install


def android_event(n: int, session: str) -> dict[str, Any]:
    """One event as td-android-sdk 1.1.0 queues it after ``addEvent`` with
    enableAutoAppendUniqId, enableAutoAppendRecordUUID, enableAutoAppendModelInformation,
    enableAutoAppendAppInformation, enableAutoAppendLocaleInformation and a session
    (TreasureData.addEventWithCallback), plus the ``uuid`` its TDClient gives every
    event and the ``time`` it appends by default."""
    return {
        "screen": "cart",
        "n": n,
        "td_session_id": session,
        "time": int(time.time()),
        "td_uuid": DEVICE,
        "td_board": "husky",
        "td_brand": "google",
        "td_device": "husky",
        "td_display": "UD1A.230803.041",
        "td_model": "Pixel 8 Pro",
        "td_os_ver": 34,
        "td_os_type": "Android",
        "td_app_ver": "2.4.1",
        "td_app_ver_num": 241,
        "td_locale_country": "JP",
        "td_locale_lang": "ja",
        "record_uuid": str(uuid.uuid4()),
        "uuid": str(uuid.uuid4()),
    }


def android_upload(server: Server, table: str, events: list[Any], **kw: Any) -> httpx.Response:
    """``sendQueuedEvents`` of td-android-sdk 1.1.0: one POST per table to
    ``{endpoint}/{db}/{table}`` (KeenClient.publishToIngest), gzip on by default
    (TDHttpHandler.sendRequest)."""
    tracking_ip = kw.pop("tracking_ip", False)
    media = INGEST_MOBILE if tracking_ip else INGEST
    return httpx.post(
        f"{server.url}/test_db/{table}",
        content=gzip.compress(msgspec.json.encode({"events": events})),
        headers={
            "Host": RECORDS_HOST,
            "Authorization": f"TD1 {server.write_key}",
            "Content-Type": media,
            "Accept": media,
            "User-Agent": "TD-Android-SDK/1.1.0 (Pixel 8 Pro 14)",
            "Content-Encoding": "gzip",
        },
        timeout=30,
        **kw,
    )


def ios_upload(server: Server, table: str, events: list[Any]) -> httpx.Response:
    """td-ios-sdk 1.2.1 (TDClient.sendEvents): the same route and body; its ids are
    NSUUID strings, in upper case."""
    return httpx.post(
        f"{server.url}/test_db/{table}",
        content=gzip.compress(msgspec.json.encode({"events": events})),
        headers={
            "Host": RECORDS_HOST,
            "Authorization": f"TD1 {server.write_key}",
            "Content-Type": INGEST,
            "Accept": INGEST,
            "User-Agent": "TD-iOS-SDK/1.2.1 (iOS 17.4)",
            "Content-Encoding": "gzip",
        },
        timeout=30,
    )


def keen_upload(
    server: Server, path: str, body: Any, *, host: str = RECORDS_HOST, **headers: str
) -> httpx.Response:
    """td-android-sdk 0.6 / td-ios-sdk 0.9 (TDHttpHandler, TDClient.sendEvents): every
    queued event in one body keyed by collection, deflated (a zlib stream)."""
    sent = {
        "Host": host,
        "Content-Type": "application/json",
        "X-TD-Write-Key": server.write_key,
        "X-TD-Data-Type": "k",
        "Content-Encoding": "deflate",
        "User-Agent": "TD-Android-SDK/0.6.0 (Pixel 3 11)",
        **headers,
    }
    content = msgspec.json.encode(body)
    if sent["Content-Encoding"] == "deflate":
        content = zlib.compress(content)
    return httpx.post(f"{server.url}{path}", content=content, headers=sent, timeout=30)


def metric(server: Server, line_start: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sdk_events_are_stored_with_their_td_uuid(server: Server) -> None:
    session = str(uuid.uuid4())
    events = [android_event(n, session) for n in range(3)]
    r = android_upload(server, "app_events", events)
    assert r.status_code == 200
    assert r.json() == {"receipts": [{"success": True}] * 3}
    ip_events = [android_event(n, session) for n in (10, 11)]
    r = android_upload(server, "app_events", ip_events, tracking_ip=True)
    assert r.json() == {"receipts": [{"success": True}] * 2}
    ios = [
        {
            "screen": "home",
            "n": 20,
            "td_uuid": DEVICE.upper(),
            "record_uuid": str(uuid.uuid4()).upper(),
            "uuid": str(uuid.uuid4()).upper(),
            "time": int(time.time()),
            "td_ios_event": "TD_IOS_APP_OPEN",
        }
    ]
    assert ios_upload(server, "app_events", ios).json() == {"receipts": [{"success": True}]}

    rows = server.wait_for(
        "SELECT * FROM test_db.app_events ORDER BY n", lambda rows: len(rows) == 6
    )
    sent = {e["n"]: e for e in [*events, *ip_events, *ios]}
    for row in rows:
        event = sent[row["n"]]
        # Every key the SDK sent is a column holding what it sent.
        assert {k: row[k] for k in event} == event, row
        assert TDEDGE_ID.fullmatch(row["_tdedge_id"])
    assert [r["td_ip"] for r in rows] == [None, None, None, "127.0.0.1", "127.0.0.1", None]
    assert len({r["_tdedge_id"] for r in rows}) == 6
    assert not [e for e in server.errors() if e["table_name"] == "app_events"]


def test_reset_uniq_id_event_keeps_the_old_td_uuid(server: Server) -> None:
    # resetUniqId() (TreasureData.resetUniqId) queues an event with the old device id
    # to the default table (setDefaultDatabase, no default table: td_android); the next
    # upload sends it with the other queued events, before the new id's.
    session = str(uuid.uuid4())
    new_device = str(uuid.uuid4())
    reset = {
        "td_android_event": "forget_device_uuid",
        "td_uuid": DEVICE,
        "td_session_id": session,
        "record_uuid": str(uuid.uuid4()),
        "uuid": str(uuid.uuid4()),
        "time": int(time.time()),
    }
    after = {**android_event(1, session), "td_uuid": new_device}
    r = android_upload(server, "td_android", [android_event(0, session), reset, after])
    assert r.json() == {"receipts": [{"success": True}] * 3}
    rows = server.wait_for(
        "SELECT n, td_android_event, td_uuid, record_uuid, _tdedge_id "
        "FROM test_db.td_android ORDER BY time, n NULLS FIRST",
        lambda rows: len(rows) == 3,
    )
    by_event = {r["td_android_event"]: r for r in rows}
    forget = by_event["forget_device_uuid"]
    assert (forget["n"], forget["td_uuid"], forget["record_uuid"]) == (
        None,
        DEVICE,
        reset["record_uuid"],
    )
    assert TDEDGE_ID.fullmatch(forget["_tdedge_id"])
    assert sorted((r["n"], r["td_uuid"]) for r in rows if r["n"] is not None) == [
        (0, DEVICE),
        (1, new_device),
    ]
    assert not [e for e in server.errors() if e["table_name"] == "td_android"]


def as_older_tdedge_left_it(data_dir: Path) -> None:
    """Rewrite a stopped server's lake as tdedge kept it before ``_tdedge_id``: its own
    id of each record in ``td_uuid`` (the clients' td_uuid only from the Postback door,
    in the same column), and no record of the upgrade."""
    con = connect()
    try:
        lake = data_dir / "lake"
        con.execute(
            f"ATTACH 'ducklake:sqlite:{lake / 'catalog.sqlite'}' AS lake "
            f"(DATA_PATH '{lake / 'data'}/')"
        )
        con.execute("ALTER TABLE lake.test_db.sdk_only RENAME COLUMN _tdedge_id TO td_uuid")
        con.execute(
            "UPDATE lake.test_db.mixed SET td_uuid = _tdedge_id WHERE _tdedge_id IS NOT NULL"
        )
        con.execute("ALTER TABLE lake.test_db.mixed DROP COLUMN _tdedge_id")
        con.execute("DELETE FROM lake.tdedge_system.upgrades")
    finally:
        con.close()


def test_serve_upgrades_a_lake_that_kept_tdedge_ids_in_td_uuid(make_server: Any) -> None:
    server: Server = make_server()
    plain = [{"n": n, "time": 1_700_000_000 + n} for n in range(3)]
    assert android_upload(server, "sdk_only", plain).status_code == 200
    assert android_upload(server, "mixed", plain).status_code == 200
    theirs = {"n": 10, "td_uuid": DEVICE, "time": 1_700_000_010}
    assert server.postback("test_db", "mixed", theirs, key=server.write_key).status_code == 200
    rows = (
        "SELECT 'mixed' AS t, n, td_uuid, _tdedge_id FROM test_db.mixed UNION ALL "
        "SELECT 'sdk_only', n, {}, _tdedge_id FROM test_db.sdk_only ORDER BY t, n"
    )
    before = server.wait_for(rows.format("NULL"), lambda rows: len(rows) == 7)
    assert all(TDEDGE_ID.fullmatch(r["_tdedge_id"]) for r in before if r["n"] != 10)
    server.stop()
    as_older_tdedge_left_it(server.data_dir)

    server.start(timeout=60)  # this version: the loader upgrades the lake as it starts
    event = android_event(20, str(uuid.uuid4()))
    assert android_upload(server, "sdk_only", [event]).json() == {"receipts": [{"success": True}]}
    after = server.wait_for(rows.format("td_uuid"), lambda rows: len(rows) == 8)
    # Every old row is still there, tdedge's ids under their new name, the clients' own
    # td_uuid where it was; the new event brings the device's td_uuid back beside it.
    assert after[:7] == before
    new = after[7]
    assert (new["t"], new["n"], new["td_uuid"]) == ("sdk_only", 20, DEVICE)
    assert TDEDGE_ID.fullmatch(new["_tdedge_id"])
    assert server.query("SELECT name FROM tdedge_system.upgrades") == [{"name": "record_ids"}]


def test_a_resent_event_lands_once(make_server: Any) -> None:
    server: Server = make_server()
    session = str(uuid.uuid4())
    events = [android_event(n, session) for n in range(4)]
    assert android_upload(server, "resent", events).status_code == 200
    # The answer was lost: the SDK sends the same events again, with a new one.
    again = [*events[:2], android_event(4, session)]
    assert android_upload(server, "resent", again).json() == {"receipts": [{"success": True}] * 3}
    # The same event twice in one request (two queued copies).
    twice = [android_event(5, session)] * 2
    assert android_upload(server, "resent", twice).status_code == 200
    server.wait_for(
        "SELECT n FROM test_db.resent ORDER BY n",
        lambda rows: rows == [{"n": n} for n in range(6)],
    )
    errs = server.wait_errors(lambda es: len(es) >= 1)
    assert {e["reason"] for e in errs} == {"duplicate_record"}
    listed = [u for e in errs for u in msgspec.json.decode(e["record"])["record_uuids"]]
    assert sorted(listed) == sorted(
        [events[0]["record_uuid"], events[1]["record_uuid"], twice[0]["record_uuid"]]
    )
    assert metric(server, "tdedge_record_duplicates_total ") == 3

    # The loader starts again (the whole server, killed): the ids are still known.
    server.kill()
    server.start()
    assert android_upload(server, "resent", [events[3], android_event(6, session)]).json() == {
        "receipts": [{"success": True}] * 2
    }
    server.wait_for(
        "SELECT n FROM test_db.resent ORDER BY n",
        lambda rows: rows == [{"n": n} for n in range(7)],
    )
    time.sleep(1)  # a second copy of n=3 would have loaded with n=6
    assert server.query("SELECT count(*) AS c FROM test_db.resent") == [{"c": 7}]


def test_events_without_record_uuid_are_all_stored(server: Server) -> None:
    plain = {"screen": "cart", "td_uuid": DEVICE, "time": 1_700_000_000}
    for _ in range(2):
        assert android_upload(server, "no_ids", [plain, plain]).status_code == 200
    server.wait_for("SELECT count(*) AS c FROM test_db.no_ids", lambda rows: rows == [{"c": 4}])


def test_pre_1_0_android_format_is_accepted_and_answered_in_its_shape(server: Server) -> None:
    body = {
        "test_db.old_events": [
            {
                "keen": {"timestamp": "2021-04-22T10:00:00.123+0900"},
                "#UUID": "8e3c5a6e-1d2f-4b3a-9c8d-7e6f5a4b3c2d",
                "td_uuid": DEVICE,
                "record_uuid": "r-1",
                "n": 1,
            },
            {
                "keen": {"timestamp": "2021-04-22T10:00:01.000+0900"},
                "#UUID": "9e3c5a6e-1d2f-4b3a-9c8d-7e6f5a4b3c2d",
                "#SSUT": "server_upload_time",
                "n": 2,
            },
            {"keen": {"timestamp": "2021-04-22T10:00:02.000+0900"}, "#SSUT": True, "n": 3},
            {"keen": {"timestamp": "not a time"}, "n": 4},
            {"": "no name", "n": 5},
            "not an object",
        ],
        "test_db.Other_Table": [{"keen": {"timestamp": "2021-04-22T01:00:00.000+0000"}, "m": 1}],
        "no_dot": [{"n": 1}, {"n": 2}],
    }
    before = time.time()
    r = keen_upload(server, "/android/v3/event", body)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    answer = r.json()
    assert list(answer) == list(body)  # the keys exactly as sent, in order
    ok = {"success": True}
    assert answer["test_db.old_events"][:4] == [ok] * 4
    assert [x["error"]["name"] for x in answer["test_db.old_events"][4:]] == [
        "InvalidPropertyNameError",
        "InvalidPropertyValueError",
    ]
    assert answer["test_db.Other_Table"] == [ok]
    assert [x["error"]["name"] for x in answer["no_dot"]] == ["InvalidCollectionNameError"] * 2
    assert all(type(x["success"]) is bool for v in answer.values() for x in v)

    rows = server.wait_for(
        "SELECT * FROM test_db.old_events ORDER BY n", lambda rows: len(rows) == 4
    )
    assert "#uuid" not in rows[0] and "#ssut" not in rows[0]
    assert [r["time"] for r in rows[:2]] == [1619053200, 1619053201]
    assert rows[0]["uuid"] == body["test_db.old_events"][0]["#UUID"]  # type: ignore[index]
    assert (rows[0]["td_uuid"], rows[0]["record_uuid"]) == (DEVICE, "r-1")
    assert before - 1 <= rows[1]["server_upload_time"] <= time.time() + 1
    assert before - 1 <= rows[2]["time"] <= time.time() + 1  # #SSUT: true
    assert msgspec.json.decode(rows[3]["keen"]) == {"timestamp": "not a time"}  # kept
    assert all(TDEDGE_ID.fullmatch(r["_tdedge_id"]) for r in rows)
    assert "keen" not in {k for k, v in rows[0].items() if v is not None}
    other = server.wait_for("SELECT m, time FROM test_db.other_table", lambda rows: len(rows) == 1)
    assert other == [{"m": 1, "time": 1619053200}]

    errs = server.wait_errors(lambda es: len(es) == 4)
    assert sorted(e["reason"] for e in errs) == [
        "invalid_name",
        "invalid_name",
        "invalid_property_name",
        "not_an_object",
    ]
    assert {e["door"] for e in errs} == {"mobile"}


def test_pre_1_0_ios_format_on_the_legacy_door(server: Server) -> None:
    # td-ios-sdk 0.9 sent to https://in.treasuredata.com/ios/v3/event: the legacy host.
    body = {
        "test_db.ios_old": [
            {
                "keen": {"timestamp": "2022-09-30T18:30:00+09:00"},
                "#UUID": "8E3C5A6E-1D2F-4B3A-9C8D-7E6F5A4B3C2D",
                "td_uuid": DEVICE.upper(),
                "n": 1,
            }
        ]
    }
    r = keen_upload(
        server,
        "/ios/v3/event",
        body,
        host="in.tdedge.test",
        **{"User-Agent": "TD-iOS-SDK/0.9.0 (iOS 16.0)"},
    )
    assert r.json() == {"test_db.ios_old": [{"success": True}]}
    rows = server.wait_for("SELECT * FROM test_db.ios_old", lambda rows: len(rows) == 1)
    assert (rows[0]["time"], rows[0]["uuid"]) == (
        1664530200,
        "8E3C5A6E-1D2F-4B3A-9C8D-7E6F5A4B3C2D",
    )
    # Compression off (disableEventCompression), and a resend of the same body.
    body2 = {"test_db.ios_old": [{"n": 2, "record_uuid": "R"}, {"n": 3, "record_uuid": "R"}]}
    r = keen_upload(server, "/ios/v3/event", body2, **{"Content-Encoding": ""})
    assert r.json() == {"test_db.ios_old": [{"success": True}, {"success": True}]}
    server.wait_for("SELECT n FROM test_db.ios_old ORDER BY n", lambda rows: len(rows) == 2)
    assert server.query("SELECT n FROM test_db.ios_old ORDER BY n") == [{"n": 1}, {"n": 2}]


def test_pre_1_0_requests_past_500_events_are_answered_500_at_a_time(server: Server) -> None:
    # td-ios-sdk before 1.0 sent every queued event at once: an app that was offline
    # may hold thousands. The ones past 500 fail with a name the SDKs keep events for.
    body = {
        "test_db.backlog_a": [{"i": i} for i in range(400)],
        "test_db.backlog_b": [{"i": i} for i in range(300)],
    }
    r = keen_upload(server, "/ios/v3/event", body)
    answer = r.json()
    assert answer["test_db.backlog_a"] == [{"success": True}] * 400
    b = answer["test_db.backlog_b"]
    assert b[:100] == [{"success": True}] * 100
    assert {x["error"]["name"] for x in b[100:]} == {"TooManyEventsError"}
    assert len(b) == 300
    server.wait_for(
        "SELECT (SELECT count(*) FROM test_db.backlog_a) + "
        "(SELECT count(*) FROM test_db.backlog_b) AS c",
        lambda rows: rows == [{"c": 500}],
    )
    assert (
        metric(
            server,
            'tdedge_refusals_total{door="mobile",kept="client",reason="too_many_events"}',
        )
        == 200
    )


def test_pre_1_0_refusals(server: Server) -> None:
    body = {"test_db.refused": [{"n": 1}]}
    r = keen_upload(server, "/android/v3/event", body, **{"X-TD-Write-Key": ""})
    assert (r.status_code, r.json()["error"]) == (403, "missing_key")
    r = keen_upload(server, "/android/v3/event", body, **{"Content-Type": "text/plain"})
    assert (r.status_code, r.json()["error"]) == (415, "unsupported_media_type")
    r = keen_upload(server, "/android/v3/event", body, **{"Content-Encoding": "br"})
    assert (r.status_code, r.json()["error"]) == (415, "unsupported_encoding")
    r = httpx.post(
        f"{server.url}/android/v3/event",
        content=b"not deflate",
        headers={
            "Content-Type": "application/json",
            "X-TD-Write-Key": server.write_key,
            "Content-Encoding": "deflate",
        },
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_deflate")
    bad_bodies: list[Any] = [{"test_db.refused": {"n": 1}}, [1], {}, {"test_db.refused": []}]
    for bad in bad_bodies:
        r = keen_upload(server, "/android/v3/event", bad)
        assert r.status_code == 400, bad
    r = keen_upload(server, f"/android/v3/event?td_write_key={server.write_key}", body)
    assert (r.status_code, r.json()["error"]) == (403, "key_in_url")
    r = httpx.get(f"{server.url}/android/v3/event")
    assert r.status_code == 405
    # A raw deflate stream (no zlib header) is taken too.
    raw = zlib.compressobj(wbits=-15)
    content = raw.compress(msgspec.json.encode({"test_db.refused": [{"n": 2}]})) + raw.flush()
    r = httpx.post(
        f"{server.url}/android/v3/event",
        content=content,
        headers={
            "Content-Type": "application/json",
            "X-TD-Write-Key": server.write_key,
            "Content-Encoding": "deflate",
        },
    )
    assert r.json() == {"test_db.refused": [{"success": True}]}
    errs = server.wait_errors(lambda es: len(es) >= 9)
    assert {e["door"] for e in errs} == {"mobile"}
    assert sorted({e["reason"] for e in errs}) == [
        "invalid_body",
        "invalid_deflate",
        "key_in_url",
        "missing_key",
        "no_events",
        "unsupported_encoding",
        "unsupported_media_type",
    ]
