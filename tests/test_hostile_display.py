"""Keys with control characters are shown escaped, one line each, in summaries and status."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from pixelfleet.cli.display import printable
from pixelfleet.cli.main import cli

REPO = Path(__file__).resolve().parents[1]
FLOWER = REPO / "tests" / "data" / "flower.jpg"


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    assert printable("al/2013/x.tif") == "al/2013/x.tif"
    assert printable("café ü 東京.jpg") == "café ü 東京.jpg"
    assert printable("new\nline\ttab\rcr.jpg") == "new\\nline\\ttab\\rcr.jpg"
    assert printable("\x1b[31mred\x07\x7f\x85.jpg") == "\\x1b[31mred\\x07\\x7f\\x85.jpg"
    assert printable("evil\u202egpj.exe \u2028 \udcff") == "evil\\u202egpj.exe \\u2028 \\udcff"


def test_summary_and_status_show_odd_keys_escaped(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    names = ["new\nline.jpg", "tab\tbed.jpg", "esc\x1b[2Jape.jpg", "fine.jpg"]
    for name in names:
        shutil.copy(FLOWER, bucket / name)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        f"""
[source]
url = "{bucket}"
include = ["**/*.jpg"]
partition = {{ by = "object" }}
[output]
url = "{tmp_path / "out"}"
[[steps]]
op = "thumbnail"
size = 32
key = "{{stem}}.thumb.jpg"
[run]
executor = "inline"
[catalog]
url = "sqlite:///{tmp_path / "catalog.db"}"
collection = "odd"
"""
    )
    runner = CliRunner()
    run = runner.invoke(cli, ["run", str(pipeline)])
    status = runner.invoke(cli, ["status"])
    dry = runner.invoke(cli, ["run", str(pipeline), "--dry-run"])
    index = runner.invoke(cli, ["index", str(pipeline)])
    assert run.exit_code == 1, run.output
    assert "3 failed" in run.output
    assert index.exit_code == 1, index.output
    for output in (run.output, status.output, index.output):
        assert "\t" not in output and "\x1b" not in output
        lines = output.splitlines()
        for shown in ("new\\nline.jpg:", "tab\\tbed.jpg:", "esc\\x1b[2Jape.jpg:"):
            line = next(x for x in lines if x.strip().startswith(shown))
            assert "control character" in line
    assert "\t" not in dry.output and "\x1b" not in dry.output
