"""`bsmfusion serve` start-up papercuts: a port in use is one line naming it and the flag, before the model loads;
--port and --max-body-bytes say what they do."""
import socket

from bsmfusion.cli import build_parser, main


def test_a_busy_port_is_one_line_naming_it_and_the_flag(bundle_factory, capsys, monkeypatch):
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append(kw))
    loaded = []
    monkeypatch.setattr("bsmfusion.inference.predictor.load", lambda *a, **kw: loaded.append(a))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--model", str(bundle_factory("tfidf_lr").path), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: port {port} is in use; pass --port N\n"
    assert started == [] and loaded == []  # refused before the bundle loads


def test_a_free_port_serves(bundle_factory, capsys, monkeypatch):
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append(kw))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["serve", "--model", str(bundle_factory("tfidf_lr").path), "--port", str(port)]) == 0
    assert started == [{"host": "127.0.0.1", "port": port, "log_level": "info"}]


def test_port_and_body_limit_have_help():
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    helps = {action.dest: action.help for action in serve._actions}
    assert "port" in helps["port"] and "in use" in helps["port"]
    assert "413" in helps["max_body_bytes"] and "body" in helps["max_body_bytes"]
