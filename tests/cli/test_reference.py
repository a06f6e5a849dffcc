"""The command reference (docs/reference.md) is made from the command line itself, and the
committed file is what the commands say now (as tests/test_grammar_options.py does for the
grammar's option table)."""

from typer.testing import CliRunner

from funnelbench.cli import app
from funnelbench.cli.reference import REFERENCE, main, reference_markdown


def test_the_committed_reference_is_what_the_commands_say_now():
    made = reference_markdown()
    assert REFERENCE.read_text() == made, (
        "docs/reference.md differs from the command line; regenerate it with python -m funnelbench.cli.reference"
    )


def test_the_reference_holds_every_command_and_option():
    text = reference_markdown()
    group = app.registered_commands
    assert group
    for info in group:
        name = info.name
        assert f"## `funnelbench {name}`" in text, name
        result = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        section = text.split(f"## `funnelbench {name}`", 1)[1].split("\n## ", 1)[0]
        for word in result.output.split():
            if word.startswith("--") and word.strip(",.;:)").replace("-", "").isalnum() and word != "--help":
                assert f"`{word.strip(',.;:)')}`" in section or word.strip(",.;:)") in section, (name, word)


def test_check_says_whether_the_file_is_up_to_date(capsys):
    assert main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
