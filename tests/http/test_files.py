"""Files (SPEC §8): upload, the access rule, signed URLs, Range/ETag, headers, thumbnails,
limits, avatars and the garbage collector — on every backend (the ``server`` fixtures)."""

from __future__ import annotations

import hashlib
import hmac
import io
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from PIL import Image

from fechatter.app import ServerInfo
from tests.conftest import (
    TEST_SECRET,
    Api,
    ApiFactory,
    User,
    make_chat,
    make_pair,
    make_workspace,
)

CEILING = 30


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "red" if mode != "1" else 1).save(out, "PNG")
    return out.getvalue()


def jpeg_rotated_with_gps(width: int, height: int) -> bytes:
    """A JPEG stored ``width`` x ``height`` whose EXIF says: turn it a quarter (orientation 6)
    and carries a GPS position."""
    img = Image.new("RGB", (width, height), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


async def upload(
    user: User, data: bytes, name: str = "notes.txt", kind: str = "text/plain"
) -> httpx.Response:
    return await user.api.post("/api/files", files={"file": (name, data, kind)})


async def uploaded(
    user: User, data: bytes, name: str = "notes.txt", kind: str = "text/plain"
) -> dict[str, Any]:
    r = await upload(user, data, name, kind)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def send(user: User, chat: int, files: list[str], content: str = "") -> httpx.Response:
    return await user.api.post(
        f"/api/chats/{chat}/messages", json={"content": content, "files": files}
    )


def problem_code(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "application/problem+json", r.text
    code: str = r.json()["code"]
    return code


async def test_upload_a_file_and_read_it_back_with_its_headers(api: Api) -> None:
    with trio.fail_after(CEILING):
        a = await api.signup()
        data = b"<html><script>alert(1)</script></html>"
        f = await uploaded(a, data, "page.html", "text/html")
        assert f["url"].startswith("/files/")
        assert (f["name"], f["size"], f["content_type"]) == ("page.html", len(data), "text/html")
        assert (f["width"], f["height"], f["thumbnail_url"]) == (None, None, None)
        r = await a.api.get(f["url"])
        assert (r.status_code, r.content) == (200, data)
        assert r.headers["content-length"] == str(len(data))
        assert r.headers["content-type"] == "text/html"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert r.headers["content-disposition"].startswith('attachment; filename="page.html"')
        assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        head = await a.api.request("HEAD", f["url"])
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == str(len(data))
        # Two uploads of the same bytes are two URLs (the URL names the upload).
        again = await uploaded(a, data, "page.html", "text/html")
        assert again["url"] != f["url"]


async def test_image_type_and_size_come_from_the_bytes_and_thumbnails_are_small(
    api: Api,
) -> None:
    with trio.fail_after(CEILING):
        a = await api.signup()
        # The client's claim is ignored: the bytes are a PNG.
        f = await uploaded(a, png(1000, 500), "x.bin", "application/pdf")
        assert (f["content_type"], f["width"], f["height"]) == ("image/png", 1000, 500)
        assert f["thumbnail_url"] == f["url"] + "/thumbnail"
        r = await a.api.get(f["url"])
        assert r.headers["content-disposition"].startswith("inline;")
        t = await a.api.get(f["thumbnail_url"])
        assert t.status_code == 200
        assert t.headers["content-type"] in ("image/jpeg", "image/png")
        assert t.headers["x-content-type-options"] == "nosniff"
        assert Image.open(io.BytesIO(t.content)).size == (400, 200)
        # A claimed image that is not one is a plain file, served as an attachment.
        fake = await uploaded(a, b"not a picture", "evil.png", "image/png")
        assert (fake["content_type"], fake["thumbnail_url"]) == ("application/octet-stream", None)
        r = await a.api.get(fake["url"])
        assert r.headers["content-disposition"].startswith("attachment;")
        assert (await a.api.get(fake["url"] + "/thumbnail")).status_code == 404
        # An SVG never shows inline: it could carry script.
        svg = await uploaded(
            a, b'<svg xmlns="http://www.w3.org/2000/svg"/>', "i.svg", "image/svg+xml"
        )
        r = await a.api.get(svg["url"])
        assert r.headers["content-disposition"].startswith("attachment;")


async def test_thumbnail_is_upright_and_carries_no_metadata(api: Api) -> None:
    with trio.fail_after(CEILING):
        a = await api.signup()
        f = await uploaded(a, jpeg_rotated_with_gps(800, 400), "photo.jpg", "image/jpeg")
        assert (f["content_type"], f["width"], f["height"]) == ("image/jpeg", 400, 800)
        t = await a.api.get(f["thumbnail_url"])
        thumb = Image.open(io.BytesIO(t.content))
        assert thumb.size == (200, 400)  # turned upright, long side 400
        assert dict(thumb.getexif()) == {}  # no orientation, no GPS
        assert b"Exif" not in t.content


@pytest.fixture
async def people(api: Api) -> tuple[User, User, User, User, int]:
    """a (uploader), b (in a's chats), c (same workspace, in no chat of a's), d (outsider)."""
    a, b, c, d = [await api.signup() for _ in range(4)]
    ws = await make_workspace(a, b, c)
    return a, b, c, d, ws


async def test_access_matrix(people: tuple[User, User, User, User, int]) -> None:
    a, b, c, d, ws = people
    with trio.fail_after(CEILING):
        f = await uploaded(a, png(20, 10), "p.png", "image/png")
        url, thumb = f["url"], f["thumbnail_url"]

        async def status(user: User, target: str) -> int:
            return (await user.api.get(target)).status_code

        # Not yet shared: only the uploader.
        assert [await status(u, url) for u in (a, b, c, d)] == [200, 404, 404, 404]
        group = await make_chat(a, ws, "PrivateChannel", b)
        r = await send(a, group, [url], "look")
        assert r.status_code == 201, r.text
        assert r.json()["files"] == [url]
        for target in (url, thumb):
            assert [await status(u, target) for u in (a, b, c, d)] == [200, 200, 404, 404]
        # A PublicChannel's files follow its messages: every workspace member.
        public = await make_chat(a, ws, "PublicChannel")
        r = await send(a, public, [url])
        assert r.status_code == 201, r.text
        assert [await status(u, url) for u in (a, b, c, d)] == [200, 200, 200, 404]
        # A deleted message gives no access any more.
        r = await a.api.delete(f"/api/chats/{public}/messages/{r.json()['id']}")
        assert r.status_code == 204, r.text
        assert [await status(u, url) for u in (a, b, c, d)] == [200, 200, 404, 404]
        missing = await d.api.get("/files/AAAAAAAAAAAAAAAAAAAAAA")
        assert (missing.status_code, problem_code(missing)) == (404, "file_not_found")
        assert problem_code(await d.api.get(url)) == "file_not_found"
        # No credentials at all: 401.
        r = await a.api.client.get(url)
        assert (r.status_code, problem_code(r)) == (401, "missing_token")


async def test_message_files_must_be_the_senders_uploads(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, chat = await make_pair(api)
        f = await uploaded(a, b"abc")
        for files in ([f["url"]], ["/files/nosuchupload"], [f["url"] + "/thumbnail"]):
            r = await send(b, chat, files)
            assert r.status_code == 422, r.text
            assert r.json()["errors"][0]["field"] == "files"
        r = await send(a, chat, [f["url"]])
        assert r.status_code == 201, r.text


async def test_range_and_conditional_requests(api: Api) -> None:
    with trio.fail_after(CEILING):
        a = await api.signup()
        data = bytes(range(256)) * 40
        f = await uploaded(a, data, "data.bin", "application/octet-stream")
        url = f["url"]
        r = await a.api.get(url, headers={"Range": "bytes=10-19"})
        assert (r.status_code, r.content) == (206, data[10:20])
        assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
        assert r.headers["content-length"] == "10"
        r = await a.api.get(url, headers={"Range": "bytes=-5"})
        assert (r.status_code, r.content) == (206, data[-5:])
        r = await a.api.get(url, headers={"Range": "bytes=10000-"})
        assert (r.status_code, r.content) == (206, data[10000:])
        r = await a.api.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416
        assert r.headers["content-range"] == f"bytes */{len(data)}"
        r = await a.api.get(url, headers={"Range": "bytes=0-1,5-6"})  # several: whole file
        assert (r.status_code, r.content) == (200, data)
        etag = (await a.api.get(url)).headers["etag"]
        r = await a.api.get(url, headers={"If-None-Match": etag})
        assert (r.status_code, r.content) == (304, b"")
        r = await a.api.get(url, headers={"If-None-Match": '"other"'})
        assert r.status_code == 200
        r = await a.api.get(url, headers={"Range": "bytes=0-0", "If-Range": '"stale"'})
        assert (r.status_code, r.content) == (200, data)


async def test_a_range_with_non_ascii_digits_is_ignored_not_a_500(api: Api) -> None:
    # "²" (0xB2 in latin-1) is a digit to str.isdigit but not to int(): a header naming it
    # is malformed, so the whole file is the answer (RFC 9110 §14.2), never an error.
    with trio.fail_after(CEILING):
        a = await api.signup()
        data = b"0123456789"
        url = (await uploaded(a, data))["url"]
        for value in (b"bytes=\xb2-", b"bytes=-\xb2", b"bytes=0-\xb2", b"bytes=\xb9-\xb3"):
            r = await a.api.get(url, headers={"Range": value})
            assert (r.status_code, r.content) == (200, data), value


async def test_a_304_does_not_claim_an_empty_file(api: Api) -> None:
    # RFC 9110 §8.6: a 304 carries Content-Length only if it is the 200's; "0" would tell
    # a cache the stored file is empty.
    with trio.fail_after(CEILING):
        a = await api.signup()
        data = b"0123456789"
        url = (await uploaded(a, data))["url"]
        etag = (await a.api.get(url)).headers["etag"]
        for method in ("GET", "HEAD"):
            r = await a.api.request(method, url, headers={"If-None-Match": etag})
            assert r.status_code == 304
            assert r.headers.get("content-length", str(len(data))) == str(len(data)), method
            assert r.headers["etag"] == etag


def signed(url: str, uid: int, exp: int, version: int = 0) -> str:
    key = hmac.new(TEST_SECRET.encode(), b"fechatter file URL signing v1", hashlib.sha256).digest()
    sig = hmac.new(key, f"{url}\n{uid}\n{exp}\n{version}".encode(), hashlib.sha256).hexdigest()
    return f"{url}?uid={uid}&exp={exp}&sig={sig}"


async def test_signed_urls_are_bound_to_the_caller_and_expire(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, chat = await make_pair(api)
        f = await uploaded(a, png(30, 30), "p.png", "image/png")
        r = await a.api.post("/api/files/sign", json={"urls": [f["url"], f["thumbnail_url"]]})
        assert r.status_code == 200, r.text
        urls = r.json()["urls"]
        assert set(urls) == {f["url"], f["thumbnail_url"]}
        assert a.auth["token"] not in urls[f["url"]]
        plain = api.client  # no Authorization header
        r = await plain.get(urls[f["url"]])
        assert (r.status_code, r.headers["content-type"]) == (200, "image/png")
        assert (await plain.get(urls[f["thumbnail_url"]])).status_code == 200
        exp = int(urls[f["url"]].split("exp=")[1].split("&")[0])
        assert time.time() < exp <= time.time() + 3600
        # Another path, another user, a forged or an expired signature: refused.
        other = urls[f["url"]].replace(f["url"], f["thumbnail_url"])
        assert (await plain.get(other)).status_code == 401
        forged = urls[f["url"]].replace(f"uid={a.id}", f"uid={b.id}")
        assert (await plain.get(forged)).status_code == 401
        assert (await plain.get(signed(f["url"], a.id, int(time.time()) - 1))).status_code == 401
        good = signed(f["url"], a.id, int(time.time()) + 60)
        assert (await plain.get(good)).status_code == 200
        # B's own signature works only once B may read the file (the rule is checked on use).
        r = await b.api.post("/api/files/sign", json={"urls": [f["url"]]})
        b_url = r.json()["urls"][f["url"]]
        assert (await plain.get(b_url)).status_code == 404
        assert (await send(a, chat, [f["url"]])).status_code == 201
        assert (await plain.get(b_url)).status_code == 200
        # Signing out everywhere voids the user's signed URLs.
        r = await a.api.post(
            "/api/auth/logout",
            json={"refresh_token": a.auth["refresh_token"], "everywhere": True},
        )
        assert r.status_code == 204, r.text
        assert (await plain.get(urls[f["url"]])).status_code == 401
        r = await b.api.post("/api/files/sign", json={"urls": ["https://elsewhere/x"]})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"].startswith("urls")


async def test_a_signature_with_non_ascii_characters_is_refused_not_a_500(api: Api) -> None:
    with trio.fail_after(CEILING):
        a = await api.signup()
        url = (await uploaded(a, b"bytes"))["url"]
        r = await a.api.post("/api/files/sign", json={"urls": [url]})
        good = r.json()["urls"][url]
        assert (await api.client.get(good)).status_code == 200
        for bad in (good.replace("sig=", "sig=%FF"), good.replace("sig=", "sig=%C3%A9")):
            r = await api.client.get(bad)
            assert (r.status_code, problem_code(r)) == (401, "invalid_signature"), bad


async def test_upload_input_errors_are_problems(api: Api) -> None:
    with trio.fail_after(CEILING):
        a = await api.signup()
        r = await api.client.post("/api/files", files={"file": ("a", b"x")})
        assert (r.status_code, problem_code(r)) == (401, "missing_token")
        r = await a.api.post("/api/files", json={"file": "x"})
        assert (r.status_code, problem_code(r)) == (400, "unsupported_content_type")
        r = await a.api.post("/api/files", files={"other": ("a", b"x")})
        assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "file")
        r = await a.api.post("/api/files", files=[("file", ("a", b"x")), ("file", ("b", b"y"))])
        assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "file")
        r = await a.api.post("/api/files", files={"file": ("empty", b"")})
        assert (r.status_code, problem_code(r)) == (422, "empty_file")
        r = await a.api.post(
            "/api/files",
            content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert (r.status_code, problem_code(r)) == (400, "malformed_multipart")
        r = await a.api.put("/api/files")
        assert r.status_code == 405
        # A hostile name is reduced to a plain last component.
        f = await uploaded(a, b"x", "../../etc/pa\u202esswd\r\nX-Evil: 1", "text/plain")
        assert "/" not in f["name"]
        assert "\u202e" not in f["name"]
        assert not any(ord(ch) < 32 for ch in f["name"])
        r = await a.api.get(f["url"])
        assert "x-evil" not in r.headers


@pytest.mark.direct_listener(
    reason="the server's refusal while streaming; nginx refuses a body over"
    " client_max_body_size (21m) before a node reads it"
)
async def test_a_file_too_large_is_refused_while_streaming(
    api_with: ApiFactory, tmp_path: Path
) -> None:
    """413 as soon as the file passes the limit, the body still unfinished (chunked, so no
    Content-Length could have told): the server answers without waiting for the rest."""
    limit = 256 * 1024
    api = await api_with(max_file_bytes=limit)
    with trio.fail_after(CEILING):
        a = await api.signup()
        assert (await upload(a, b"x" * limit)).status_code == 201
        url = httpx.URL(str(api.client.base_url))
        assert url.host is not None
        assert url.port is not None
        stream = await trio.open_tcp_stream(url.host, url.port)
        async with stream:
            part = (
                b'--b0\r\nContent-Disposition: form-data; name="file"; filename="big"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n"
            )
            await stream.send_all(
                b"POST /api/files HTTP/1.1\r\nHost: test\r\n"
                + f"Authorization: Bearer {a.api.token}\r\n".encode()
                + b"Content-Type: multipart/form-data; boundary=b0\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(part), part)
            )
            chunk = b"y" * 65536
            for _ in range(limit // len(chunk) + 2):  # past the limit; the body never ends
                await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            answer = b""
            while data := await stream.receive_some(65536):  # until the server closes
                answer += data
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"code":"file_too_large"' in body
        # Declared too large (Content-Length): refused before reading (the body as bytes:
        # httpx's multipart stream would be left unexhausted, and warn).
        r = await a.api.post(
            "/api/files",
            content=part + b"z" * (limit + 128 * 1024) + b"\r\n--b0--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=b0"},
        )
        assert (r.status_code, problem_code(r)) == (413, "file_too_large")
        assert list((tmp_path / "files" / "tmp").iterdir()) == []  # no temp file left
        assert (await upload(a, b"fine")).status_code == 201  # the server is fine


async def test_refused_large_bodies_get_their_answer_and_the_api_stays_up(
    api_with: ApiFactory,
) -> None:
    """A refused request to the file routes has its body read to its end (a declared length up
    to max_file_bytes + 1 MiB) before the node answers and closes. Through nginx (``proxy``
    mode), which sends a buffered body whole before it reads the answer, anonymous 4 MiB
    uploads get their 401 problem document, not a 502 (broken pipe), and the API stays up:
    nginx once counted each as a failed node and, with max_fails=1, marked the whole API down
    (deploy/nginx.conf; its error log is checked clean when the proxy stops)."""
    limit = 4 << 20  # the read-on bound: 5 MiB
    api = await api_with(max_file_bytes=limit)
    multipart = {"Content-Type": "multipart/form-data; boundary=b0"}
    with trio.fail_after(CEILING):
        a = await api.signup()
        for _ in range(4):
            r = await api.client.post("/api/files", content=b"x" * (4 << 20), headers=multipart)
            assert (r.status_code, problem_code(r)) == (401, "missing_token")
            r = await api.client.get("/health")
            assert r.status_code == 200, r.text
        # Over the node's limit, under the proxy's (21m) and the node's read-on bound.
        r = await a.api.post("/api/files", content=b"y" * (limit + 512 * 1024), headers=multipart)
        assert (r.status_code, problem_code(r)) == (413, "file_too_large")
        r = await a.api.put("/api/files", content=b"z" * (2 << 20))
        assert (r.status_code, r.headers["allow"]) == (405, "POST")
        assert (await upload(a, b"fine")).status_code == 201  # the API is fine


@pytest.mark.one_api_node(
    reason="the upload rate is per node (each node's own buckets, docs/cluster.md); the quota"
    " is global"
)
async def test_upload_rate_and_quota_have_their_own_codes(api_with: ApiFactory) -> None:
    api = await api_with(upload_burst=2, upload_rate=0.001, upload_quota_bytes=3000)
    with trio.fail_after(CEILING):
        a, b = await api.signup(), await api.signup()
        assert (await upload(a, b"q" * 2000)).status_code == 201
        r = await upload(a, b"q" * 1500)
        assert (r.status_code, problem_code(r)) == (413, "upload_quota_exceeded")
        assert (await upload(a, b"q" * 500)).status_code == 201
        r = await upload(a, b"q")
        assert (r.status_code, problem_code(r)) == (429, "upload_rate_limited")
        assert float(r.headers["retry-after"]) > 0
        assert (await upload(b, b"q")).status_code == 201  # per user


async def test_decompression_bombs_are_refused(api_with: ApiFactory) -> None:
    api = await api_with(max_image_pixels=1_000_000)
    with trio.fail_after(CEILING):
        a = await api.signup()
        r = await upload(a, png(2000, 1000, mode="1"), "bomb.png", "image/png")
        assert (r.status_code, problem_code(r)) == (422, "image_too_large")
        assert r.json()["errors"][0]["field"] == "file"
        assert (await upload(a, png(1000, 1000), "ok.png", "image/png")).status_code == 201


async def test_avatars(people: tuple[User, User, User, User, int]) -> None:
    a, b, _c, d, _ws = people
    with trio.fail_after(CEILING):
        image = await uploaded(a, png(64, 64), "me.png", "image/png")
        text = await uploaded(a, b"not an image")
        others = await uploaded(b, png(8, 8), "b.png", "image/png")
        for bad in (text["url"], others["url"], "https://x/a.png", image["thumbnail_url"]):
            r = await a.api.patch("/api/users/me", json={"avatar": bad})
            assert r.status_code == 422, r.text
            assert r.json()["errors"][0]["field"] == "avatar"
        r = await a.api.patch("/api/users/me", json={"avatar": image["url"]})
        assert (r.status_code, r.json()["avatar"]) == (200, image["url"])
        # Anyone sharing a workspace with a reads it; an outsider does not.
        assert (await b.api.get(image["url"])).status_code == 200
        assert (await b.api.get(image["thumbnail_url"])).status_code == 200
        assert (await d.api.get(image["url"])).status_code == 404
        r = await a.api.patch("/api/users/me", json={"avatar": None})
        assert r.json()["avatar"] is None
        assert (await b.api.get(image["url"])).status_code == 404


async def test_the_collector_never_removes_a_referenced_blob(
    server: ServerInfo, people: tuple[User, User, User, User, int], tmp_path: Path
) -> None:
    a, b, _c, _d, ws = people
    assert server.files is not None
    with trio.fail_after(CEILING):
        chat = await make_chat(a, ws, "PrivateChannel", b)
        in_message = await uploaded(a, png(50, 50), "m.png", "image/png")
        avatar = await uploaded(a, png(40, 40), "a.png", "image/png")
        unused = await uploaded(a, b"nobody wants me")
        in_deleted = await uploaded(a, b"gone with its message")
        same_bytes = await uploaded(b, b"nobody wants me")  # shares unused's blob
        assert (await send(a, chat, [in_message["url"]])).status_code == 201
        r = await send(a, chat, [in_deleted["url"]])
        assert (
            await a.api.delete(f"/api/chats/{chat}/messages/{r.json()['id']}")
        ).status_code == 204
        assert (await send(b, chat, [same_bytes["url"]])).status_code == 201
        r = await a.api.patch("/api/users/me", json={"avatar": avatar["url"]})
        assert r.status_code == 200
        # A pass "a day and more later": everything is past the grace.
        later = time.time() + 2 * server.files.settings.file_gc_grace
        expired, deleted = await server.files.collect(now=later)
        assert expired == 2  # unused and in_deleted
        assert deleted == 1  # in_deleted's blob; unused's is still same_bytes'
        for f in (in_message, avatar):
            for target in (f["url"], f["thumbnail_url"]):
                r = await a.api.get(target)
                assert r.status_code == 200, target
        r = await b.api.get(same_bytes["url"])
        assert (r.status_code, r.content) == (200, b"nobody wants me")
        for f in (unused, in_deleted):
            assert (await a.api.get(f["url"])).status_code == 404
        blobs = {p.name for p in (tmp_path / "files" / "blobs").rglob("*") if p.is_file()}
        assert hashlib.sha256(b"gone with its message").hexdigest() not in blobs
        assert hashlib.sha256(b"nobody wants me").hexdigest() in blobs
        # A second pass finds nothing more to do.
        assert await server.files.collect(now=later) == (0, 0)


async def test_the_collector_keeps_an_upload_a_reference_was_checked_for_within_the_grace(
    server: ServerInfo, people: tuple[User, User, User, User, int]
) -> None:
    # A send (or an avatar change) checks its uploads and claims them: the collector keeps an
    # upload claimed after its cutoff, so one checked just before its grace ran out is not
    # deleted before the message naming it commits (docs/api.md "Files").
    a, b, _c, _d, ws = people
    assert server.files is not None
    grace = server.files.settings.file_gc_grace
    with trio.fail_after(CEILING):
        chat = await make_chat(a, ws, "PrivateChannel", b)
        sent = await uploaded(a, b"sent, then deleted")
        avatar = await uploaded(a, png(40, 40), "a.png", "image/png")
        idle = await uploaded(a, b"never referenced")
        between = time.time()  # after the uploads, before the claims
        r = await send(a, chat, [sent["url"]])
        assert r.status_code == 201
        deleted = await a.api.delete(f"/api/chats/{chat}/messages/{r.json()['id']}")
        assert deleted.status_code == 204
        assert (
            await a.api.patch("/api/users/me", json={"avatar": avatar["url"]})
        ).status_code == 200
        assert (await a.api.patch("/api/users/me", json={"avatar": None})).status_code == 200
        # Now no message and no avatar references any of the three. A pass whose cutoff lies
        # between the uploads and the claims takes only the one never claimed.
        assert await server.files.collect(now=between + grace) == (1, 1)
        assert (await a.api.get(idle["url"])).status_code == 404
        for kept in (sent, avatar):
            assert (await a.api.get(kept["url"])).status_code == 200
        # A grace after the claims, they go too.
        expired, _ = await server.files.collect(now=time.time() + grace + 1)
        assert expired == 2


@pytest.mark.single_process(
    reason="exact counts of one process's write limit (each cluster node enforces its share)"
)
async def test_sends_with_files_are_checked_within_the_write_limit(api_with: ApiFactory) -> None:
    # The files check claims the uploads (a write), so it runs after the send's token is
    # taken; a send it refuses gives the token back (validation uses no token).
    api = await api_with(send_burst=2, send_rate=0.001)
    with trio.fail_after(CEILING):
        a, b, chat = await make_pair(api)
        mine = await uploaded(a, b"mine")
        theirs = await uploaded(b, b"theirs")
        for _ in range(3):  # more refusals than the burst: none of them cost a token
            r = await send(a, chat, [theirs["url"]])
            assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "files")
        assert (await send(a, chat, [mine["url"]])).status_code == 201
        assert (await send(a, chat, [mine["url"]], "again")).status_code == 201
        r = await send(a, chat, [theirs["url"]])  # the limit first: no check, no claim
        assert (r.status_code, problem_code(r)) == (429, "rate_limited")
