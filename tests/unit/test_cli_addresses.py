"""How commands find a local loop started in another terminal: ``.stack/addresses.json``, refused
when stale, never over an explicit ``--address`` or address variable."""

import os

import pytest
from typer.testing import CliRunner

from selfimprove.cli import control
from selfimprove.cli.main import app
from selfimprove.core import addresses
from selfimprove.core.addresses import LocalAddresses

pytestmark = pytest.mark.unit


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A working directory with an empty ``.stack`` and no address variables."""
    monkeypatch.chdir(tmp_path)
    for name in (control.ADDRESS_ENV, control.SERVING_ADDRESS_ENV, addresses.STACK_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".stack").mkdir()
    return tmp_path / ".stack"


def dead_pid() -> int:
    """A process id that names no process."""
    pid = 2**22 - 1
    while addresses.alive(pid):
        pid -= 1
    return pid


def test_missing_file_gives_the_default_ports(here):
    assert control.control_target() == control.DEFAULT_ADDRESS
    assert control.serving_target() == control.DEFAULT_SERVING_ADDRESS


def test_running_loop_is_found_with_its_store_settings(here, monkeypatch):
    monkeypatch.delenv("SELFIMPROVE_S3_ENDPOINT", raising=False)
    env = {"SELFIMPROVE_S3_ENDPOINT": "127.0.0.1:9"}
    addresses.write(here, LocalAddresses(os.getpid(), "127.0.0.1:7001", "127.0.0.1:7002", env))
    monkeypatch.setattr(addresses, "listening", lambda address, timeout=1.0: True)
    assert control.control_target() == "127.0.0.1:7001"
    assert control.serving_target() == "127.0.0.1:7002"
    assert os.environ["SELFIMPROVE_S3_ENDPOINT"] == "127.0.0.1:9"


def test_stack_dir_variable_names_another_folder(here, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    other.mkdir()
    addresses.write(other, LocalAddresses(os.getpid(), "127.0.0.1:7003"))
    monkeypatch.setenv(addresses.STACK_DIR_ENV, str(other))
    monkeypatch.setattr(addresses, "listening", lambda address, timeout=1.0: True)
    assert control.control_target() == "127.0.0.1:7003"
    assert control.serving_target() == control.DEFAULT_SERVING_ADDRESS  # no serving endpoint recorded


def test_stale_file_is_a_clear_error_not_a_hang(here):
    addresses.write(here, LocalAddresses(dead_pid(), "127.0.0.1:7001"))
    done = CliRunner().invoke(app, ["status", "run-x"])
    assert done.exit_code == 2, done.output
    assert "addresses.json" in done.output and "has ended" in done.output


def test_file_whose_control_plane_does_not_answer_is_stale(here, monkeypatch):
    addresses.write(here, LocalAddresses(os.getpid(), "127.0.0.1:7001"))
    monkeypatch.setattr(addresses, "listening", lambda address, timeout=1.0: False)
    with pytest.raises(Exception, match="does not answer"):
        control.control_target()


def test_explicit_address_and_variables_win_over_a_stale_file(here, monkeypatch):
    addresses.write(here, LocalAddresses(dead_pid(), "127.0.0.1:7001", "127.0.0.1:7002"))
    assert control.control_target("evaluator:50052") == "evaluator:50052"
    assert control.serving_target("refinement:1") == "refinement:1"
    monkeypatch.setenv(control.ADDRESS_ENV, "e:2")
    monkeypatch.setenv(control.SERVING_ADDRESS_ENV, "r:3")
    assert control.control_target() == "e:2" and control.serving_target() == "r:3"


def test_a_loop_removes_only_its_own_file(here):
    addresses.write(here, LocalAddresses(12345, "127.0.0.1:7001"))
    addresses.remove(here, pid=os.getpid())
    assert addresses.read(here) is not None
    addresses.remove(here, pid=12345)
    assert addresses.read(here) is None


def test_unreadable_file_names_itself(here):
    (here / addresses.FILE).write_text("not json")
    with pytest.raises(Exception, match="addresses.json is not a local loop's addresses file"):
        control.control_target()
