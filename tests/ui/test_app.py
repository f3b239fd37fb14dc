"""HTTP-level checks of the UI: closed by default, cross-site POSTs refused, nothing launched by them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.ui.conftest import KEY, make_run
from tuneforge.ui.app import create_app

BAD = "model:\n  name: x\ntrain:\n  learning_rate: fast\n  epochz: 2\n"


@pytest.fixture()
def client(tmp_path):
    make_run(tmp_path / "runs", "done", finished=True)
    return TestClient(create_app(tmp_path / "runs", KEY))


def _login(client) -> str:
    client.get("/login")
    token = client.cookies.get("tf_csrf")
    assert client.post("/login", data={"key": KEY, "csrf": token}, follow_redirects=False).status_code == 303
    return token


def test_without_the_key_pages_redirect_and_the_api_refuses(client):
    assert client.get("/runs/done", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/api/runs/done/progress").status_code == 401
    assert client.post("/login", data={"key": "not-the-key"}).status_code == 401
    assert "tf_session" not in client.cookies


def test_posts_need_the_csrf_token_and_our_origin(client, tmp_path):
    token = _login(client)
    assert client.post("/launch", data={"recipe": BAD}).status_code == 403
    assert client.post("/launch", data={"recipe": BAD, "csrf": "guess"}).status_code == 403
    other = client.post("/launch", data={"recipe": BAD, "csrf": token}, headers={"origin": "http://evil.example"})
    assert other.status_code == 403
    ok = client.post("/launch", data={"recipe": BAD, "csrf": token})
    assert ok.status_code == 422 and "recipe.yaml:4: train.learning_rate" in ok.text
    assert not list((tmp_path / "runs" / ".ui").glob("*.json"))  # nothing was started


def test_crafted_run_paths_are_refused(client):
    _login(client)
    for path in ("/runs/..%2F..%2Fetc", "/api/runs/..%2Fx/progress", "/runs/.lock", "/runs/nope"):
        assert client.get(path).status_code in (400, 404), path


def test_an_empty_recipe_is_not_launched(client, tmp_path):
    token = _login(client)
    assert client.post("/launch", data={"recipe": " \n", "csrf": token}).status_code == 422
    assert not list((tmp_path / "runs" / ".ui").glob("*.json"))


def test_validate_as_you_type_needs_the_csrf_header_and_reports_lines(client, tmp_path):
    token = _login(client)
    assert client.post("/api/validate", json={"recipe": BAD}).status_code == 403
    problems = client.post("/api/validate", json={"recipe": BAD}, headers={"x-csrf-token": token}).json()["problems"]
    assert [p.split(":")[1] for p in problems] == ["4", "5"]
    assert not [p for p in (tmp_path / "runs" / ".ui").iterdir() if p.name.startswith("draft")]  # drafts removed


def test_a_runs_report_is_served_sandboxed(client, tmp_path):
    (tmp_path / "runs" / "done" / "report.html").write_text("<html><script>alert(1)</script>verdict</html>")
    _login(client)
    assert 'id="report"' in client.get("/runs/done").text
    r = client.get("/runs/done/report")
    assert r.status_code == 200 and "verdict" in r.text
    assert r.headers["content-security-policy"] == "sandbox"  # its scripts cannot act as this UI


def test_only_the_given_indexes_are_reachable(tmp_path, rag_index):
    from tests.ui.conftest import index_copy

    index = index_copy(rag_index, tmp_path / "kb")
    client = TestClient(create_app(tmp_path / "runs", KEY, [index]))
    token = _login(client)
    assert "topics/pass" in client.get("/rag").text
    for name in ("..", "..%2F..%2Fetc", str(rag_index), "other"):
        assert client.get(f"/rag?index={name}").status_code == 400, name
        r = client.post(f"/rag/{name}/delete", data={"doc_id": "topics/pass", "csrf": token})
        assert r.status_code in (400, 404), name
    # a document id that names a file or folder instead of an indexed document is refused too
    assert client.post("/rag/kb/delete", data={"doc_id": str(tmp_path), "csrf": token}).status_code == 400
    assert client.post("/rag/kb/delete", data={"doc_id": "topics/pass"}).status_code == 403  # no CSRF token
    assert "topics/pass" in client.get("/rag?index=kb").text  # nothing was deleted


def test_export_of_a_run_without_tuned_weights_is_refused(client):
    token = _login(client)
    assert client.post("/export/done", data={"csrf": token}).status_code == 400
    assert client.post("/export/..%2Fdone", data={"csrf": token}).status_code in (400, 404)
