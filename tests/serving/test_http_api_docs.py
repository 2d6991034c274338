"""docs/http-api.md and `serve --help` document every route the server has, both key headers and the status
codes; the page's example response has the fields the server returns."""
import json
import re
from pathlib import Path
from types import SimpleNamespace

from bsmfusion.cli import build_parser
from bsmfusion.serving.app import PredictResponse, RecordResult, create_app

README = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"


def readme_section(title: str) -> str:
    """docs/http-api.md (its title is `# HTTP API`): the whole page, the API's one section."""
    text = README.read_text(encoding="utf-8")
    assert text.startswith(f"# {title}\n"), f"docs/http-api.md should start with '# {title}'"
    return text


def app_routes() -> list[tuple[str, str, bool]]:
    """(method, path, part of the API schema) of every route, read from the app itself."""
    app = create_app(SimpleNamespace(bundle=SimpleNamespace(meta={})))  # routes only: nothing is scored
    routes = []
    for route in app.routes:
        methods = sorted(set(getattr(route, "methods", None) or {"GET"}) - {"HEAD"})
        routes += [(method, route.path, getattr(route, "include_in_schema", False)) for method in methods]
    return routes


def serve_help() -> str:
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices["serve"].format_help()


def test_every_route_of_the_app_is_in_the_readme_section():
    section = readme_section("HTTP API")
    routes = app_routes()
    assert {("POST", "/v1/predict"), ("GET", "/v1/model"), ("GET", "/healthz")} <= {(m, p) for m, p, _ in routes}
    for method, path, own in routes:
        # the API's own routes with their method; FastAPI's documentation pages at least by path
        pattern = rf"`{method} {re.escape(path)}`" if own else rf"`({method} )?{re.escape(path)}`"
        assert re.search(pattern, section), f"{method} {path} is not documented in README's HTTP API section"


def test_readme_and_serve_help_give_both_key_headers_limits_and_status_codes():
    section, help_text = readme_section("HTTP API"), serve_help()
    for text in (section, help_text):
        assert "Authorization: Bearer KEY" in text and "X-API-Key: KEY" in text
        for code in ("200", "401", "413", "422", "500"):
            assert code in text, code
        assert "--max-body-bytes" in text and "--max-records" in text
    for method, path, own in app_routes():
        if own:
            assert path in help_text, path
    assert "curl" in section and "curl" in help_text


def test_readme_example_response_has_the_servers_fields():
    section = readme_section("HTTP API")
    example = json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))
    assert set(example) == set(PredictResponse.model_fields)
    assert set(example["results"][0]) == set(RecordResult.model_fields)
    PredictResponse(**example)  # and it validates
