"""Parts of `payrun dev`: which log lines it shows, its start-up refusals."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from payrun import demo, devlog
from payrun.dev import DevError, check_port_free, only_instance


def view(verbose: bool = False, as_json: bool = False) -> devlog.LineView:
    return devlog.LineView(verbose=verbose, as_json=as_json, colors=False)


def show(line: str, **kwargs: bool) -> str | None:
    return view(**kwargs).show(line, devlog.parse(line))


def line(**event: object) -> str:
    return json.dumps({"timestamp": "2026-11-30T21:12:53.972880Z", "level": "info", **event})


def test_routine_request_lines_are_left_out_state_changes_are_shown() -> None:
    assert show(line(event="request_finished", status=200)) is None
    assert show(json.dumps({"ts": "x", "event": "sim_request", "status": 200})) is None
    assert show(line(event="batch_poll_later", wait_s=5)) is None
    shown = show(line(event="batch_settled", payroll_status="COMPLETED"))
    assert shown is not None
    assert "21:12:53" in shown and "batch_settled" in shown and "COMPLETED" in shown


def test_failed_requests_and_warnings_are_shown() -> None:
    assert show(line(event="request_finished", status=500)) is not None
    assert show(json.dumps({"event": "sim_request", "status": "cancelled"})) is not None
    assert show(line(event="request_finished", status=200, level="warning")) is not None


def test_verbose_shows_everything_and_json_stays_json() -> None:
    routine = line(event="request_finished", status=200)
    assert show(routine, verbose=True) is not None
    settled = line(event="batch_settled")
    assert show(settled, as_json=True) == settled


def test_lines_that_are_not_log_events_pass_unchanged() -> None:
    for text in ("payrun sim: stopped", "{not json", "[1, 2]", '{"no": "event"}'):
        assert show(text) == text


def test_a_taken_port_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DevError, match=rf"127.0.0.1:{port} \(API_PORT\) is already in use"):
            check_port_free("127.0.0.1", port, "API_PORT")


def test_a_second_instance_on_the_same_data_is_refused(tmp_path: Path) -> None:
    with only_instance(tmp_path), pytest.raises(DevError, match="already running"):  # noqa: SIM117
        with only_instance(tmp_path):
            pass
    with only_instance(tmp_path):  # free again once the first has ended
        pass


def test_the_kept_key_belongs_to_the_database_not_its_password() -> None:
    one = demo.database_key("postgresql://payrun:secret@db.example:5432/payrun")
    assert "secret" not in one
    assert one == demo.database_key("postgresql://payrun:other@db.example:5432/payrun")
    assert one != demo.database_key("postgresql://payrun:secret@db.example:5432/other")
